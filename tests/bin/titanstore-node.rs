//! The node binary these black-box tests start: the same shell over
//! [`titanstore_core::cli::main_from`] as `titanstore-server` (Cargo hands a
//! package's tests only its own binaries).

fn main() {
    let code = titanstore_core::cli::main_from(std::env::args_os());
    titanstore_core::logging::finish();
    std::process::exit(code);
}
