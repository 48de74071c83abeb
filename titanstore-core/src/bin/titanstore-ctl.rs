//! The admin command line: a thin shell over [`titanstore_core::ctl::main_from`].

fn main() {
    std::process::exit(titanstore_core::ctl::main_from(std::env::args_os()));
}
