//! The one place where Rust errors become Python exceptions. The exception
//! classes live in `titanstore.exceptions` (they need multiple inheritance
//! from builtins such as `ConnectionError`), so they are looked up there.

use pyo3::prelude::*;
use titanstore_core::client::ClientError;

/// Builds an instance of `titanstore.exceptions.<class>(message[, addr])`.
fn exception(py: Python<'_>, class: &str, message: String, addr: Option<String>) -> PyErr {
    let made = py
        .import("titanstore.exceptions")
        .and_then(|module| module.getattr(class))
        .and_then(|class| match addr {
            Some(addr) => class.call1((message, addr)),
            None => class.call1((message,)),
        });
    match made {
        Ok(exception) => PyErr::from_value(exception),
        Err(err) => err,
    }
}

/// Converts a client error into the matching `titanstore.exceptions` class.
pub(crate) fn client_error(py: Python<'_>, err: ClientError) -> PyErr {
    let message = err.to_string();
    match err {
        ClientError::NotLeader { addr } => exception(py, "NotLeaderError", message, Some(addr)),
        ClientError::NoLeader => exception(py, "NoLeaderError", message, None),
        ClientError::Protocol(_) => exception(py, "ProtocolError", message, None),
        ClientError::Server(_) => exception(py, "ServerError", message, None),
        ClientError::Connection(_) => exception(py, "TitanStoreConnectionError", message, None),
        ClientError::Timeout(_) => exception(py, "TitanStoreTimeoutError", message, None),
        ClientError::Indeterminate(_) => exception(py, "IndeterminateError", message, None),
        ClientError::InvalidInput(_) => pyo3::exceptions::PyValueError::new_err(message),
        ClientError::Conflict { current_rev } => {
            let made = py
                .import("titanstore.exceptions")
                .and_then(|module| module.getattr("ConflictError"))
                .and_then(|class| class.call1((message, current_rev)));
            match made {
                Ok(exception) => PyErr::from_value(exception),
                Err(err) => err,
            }
        }
    }
}

/// A failure in the harness machinery (proxies, runtime).
pub(crate) fn harness_error(py: Python<'_>, message: String) -> PyErr {
    exception(py, "TitanStoreError", message, None)
}
