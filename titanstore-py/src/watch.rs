//! `NativeWatch`: a watch stream behind `titanstore.Client.watch`. Waiting
//! for the next event happens with the GIL released.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use titanstore_core::client::{ClientError, WatchStream};
use titanstore_core::protocol::WatchEvent;

use crate::errors::client_error;

#[pyclass(module = "titanstore._titanstore")]
pub struct NativeWatch {
    inner: Mutex<Option<WatchStream>>,
}

impl NativeWatch {
    pub(crate) fn new(stream: WatchStream) -> NativeWatch {
        NativeWatch {
            inner: Mutex::new(Some(stream)),
        }
    }
}

/// `(kind, rev, key, value)`: kind is "set", "delete" or "progress".
type EventTuple<'py> = (
    &'static str,
    u64,
    Option<Bound<'py, PyBytes>>,
    Option<Bound<'py, PyBytes>>,
);

#[pymethods]
impl NativeWatch {
    /// The next event; resumes on another node after a failure.
    fn next_event<'py>(&self, py: Python<'py>) -> PyResult<EventTuple<'py>> {
        let event = py.detach(|| match self.inner.lock() {
            Ok(mut guard) => match guard.as_mut() {
                Some(stream) => stream.next_event(),
                None => Err(ClientError::Connection("the watch is closed".into())),
            },
            Err(_) => Err(ClientError::Protocol(
                "watch poisoned by an earlier panic".into(),
            )),
        });
        match event.map_err(|err| client_error(py, err))? {
            WatchEvent::Change {
                rev,
                key,
                value: Some(value),
            } => Ok((
                "set",
                rev,
                Some(PyBytes::new(py, &key)),
                Some(PyBytes::new(py, &value)),
            )),
            WatchEvent::Change {
                rev,
                key,
                value: None,
            } => Ok(("delete", rev, Some(PyBytes::new(py, &key)), None)),
            WatchEvent::Progress(rev) => Ok(("progress", rev, None, None)),
            WatchEvent::End(end) => Err(client_error(
                py,
                ClientError::Connection(format!("watch ended: {end:?}")),
            )),
        }
    }

    /// The revision the stream would resume at.
    #[getter]
    fn next_rev(&self) -> u64 {
        match self.inner.try_lock() {
            Ok(guard) => guard.as_ref().map_or(0, WatchStream::next_rev),
            Err(_) => 0,
        }
    }

    fn close(&self) {
        if let Ok(mut guard) = self.inner.try_lock() {
            *guard = None;
        }
    }
}
