//! `titanstore._titanstore`: the native half of the `titanstore` Python
//! package. The public API is re-exported (and documented) by the pure-Python
//! package; this module only holds what must be Rust: the client, the fault
//! proxies, the power-loss filesystem, the node entry point and the linearizability checker.

mod checker;
mod client;
mod errors;
mod lazyfs;
mod node;
mod proxy;
mod watch;

use pyo3::prelude::*;

#[pymodule]
mod _titanstore {
    #[pymodule_export]
    use super::checker::{CheckResult, check_kv_history};
    #[pymodule_export]
    use super::client::NativeClient;
    #[pymodule_export]
    use super::lazyfs::LazyFs;
    #[pymodule_export]
    use super::node::{flush_logs, run_ctl, run_node};
    #[pymodule_export]
    use super::proxy::Proxy;
    #[pymodule_export]
    use super::watch::NativeWatch;
}
