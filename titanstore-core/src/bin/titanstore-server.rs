//! The native node binary: a thin shell over [`titanstore_core::cli::main_from`].

fn main() {
    let code = titanstore_core::cli::main_from(std::env::args_os());
    // The log lines still queued are written before the process goes.
    titanstore_core::logging::finish();
    std::process::exit(code);
}
