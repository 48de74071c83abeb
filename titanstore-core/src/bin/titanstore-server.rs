//! The native node binary: a thin shell over [`titanstore_core::cli::main_process`].

fn main() {
    titanstore_core::cli::main_process();
}
