//! The native node binary: a thin shell over [`titanstore_core::cli::main_from`].

fn main() {
    std::process::exit(titanstore_core::cli::main_from(std::env::args_os()));
}
