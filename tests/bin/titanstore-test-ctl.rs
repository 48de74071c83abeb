//! The admin binary these black-box tests run: the same one-line shell over
//! [`titanstore_core::ctl::main_from`] as `titanstore-ctl`.

fn main() {
    std::process::exit(titanstore_core::ctl::main_from(std::env::args_os()));
}
