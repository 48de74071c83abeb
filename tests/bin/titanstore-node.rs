//! The node binary these black-box tests start: the same one-line shell over
//! [`titanstore_core::cli::main_process`] as `titanstore-server` (Cargo hands a
//! package's tests only its own binaries).

fn main() {
    titanstore_core::cli::main_process();
}
