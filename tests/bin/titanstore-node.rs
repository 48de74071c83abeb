//! The node binary these black-box tests start: the same one-line shell over
//! [`titanstore_core::cli::main_from`] as `titanstore-server` (Cargo hands a
//! package's tests only its own binaries).

fn main() {
    std::process::exit(titanstore_core::cli::main_from(std::env::args_os()));
}
