//! `run_node(argv)`: runs a node in this process with exactly the code of the
//! native `titanstore-server` binary (`titanstore_core::cli::main_from`).

use pyo3::prelude::*;

/// Runs a node until it is told to stop; returns its exit code (0 clean,
/// 1 failure, 2 bad arguments). `argv[0]` is the program name.
#[pyfunction]
pub fn run_node(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| titanstore_core::cli::main_from(argv))
}

/// Writes out the node's queued log lines and stops its log writer: call it
/// once, when the process is about to exit (later lines are dropped).
#[pyfunction]
pub fn flush_logs(py: Python<'_>) {
    py.detach(titanstore_core::logging::finish);
}

/// Runs `titanstore-ctl` with `argv` (program name first); returns its exit
/// code. The same code as the native `titanstore-ctl` binary.
#[pyfunction]
pub fn run_ctl(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| titanstore_core::ctl::main_from(argv))
}
