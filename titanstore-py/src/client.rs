//! `NativeClient`: the Rust client behind `titanstore.Client`. Every network
//! wait happens with the GIL released.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use titanstore_core::client::{Client, ClientError, ClientOptions};
use titanstore_core::protocol::{Delete, Get, Ping, Reply, Request, Set, StatusCmd};

use crate::errors::client_error;
use crate::watch::NativeWatch;

#[pyclass(module = "titanstore._titanstore")]
pub struct NativeClient {
    inner: Mutex<Client>,
    /// The address last used, kept apart from `inner` so that reading it
    /// (`repr()`, `addr`) never waits for a call in flight on another thread.
    addr: Mutex<String>,
}

fn seconds(value: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!("{what} must be >= 0 seconds"))
    })
}

impl NativeClient {
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Client) -> Result<T, ClientError> + Send,
    ) -> PyResult<T> {
        let result = py.detach(|| match self.inner.lock() {
            Ok(mut client) => {
                let result = f(&mut client);
                if let Ok(mut addr) = self.addr.lock() {
                    client.current_addr().clone_into(&mut addr);
                }
                result
            }
            Err(_) => Err(ClientError::Protocol(
                "client poisoned by an earlier panic".into(),
            )),
        });
        result.map_err(|err| client_error(py, err))
    }
}

#[pymethods]
impl NativeClient {
    #[new]
    #[pyo3(signature = (addrs, timeout = 5.0, retry_timeout = 10.0, follow_redirects = true))]
    fn new(
        addrs: Vec<String>,
        timeout: f64,
        retry_timeout: f64,
        follow_redirects: bool,
    ) -> PyResult<Self> {
        let options = ClientOptions {
            timeout: seconds(timeout, "timeout")?,
            retry_timeout: seconds(retry_timeout, "retry_timeout")?,
            follow_redirects,
        };
        if options.timeout.is_zero() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "timeout must be > 0",
            ));
        }
        let client = Client::new(addrs, options)
            .map_err(|err| pyo3::exceptions::PyValueError::new_err(err.to_string()))?;
        let addr = Mutex::new(client.current_addr().to_string());
        Ok(NativeClient {
            inner: Mutex::new(client),
            addr,
        })
    }

    fn get<'py>(&self, py: Python<'py>, key: Vec<u8>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let value = self.with(py, move |c| c.get(&key))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    fn sget<'py>(&self, py: Python<'py>, key: Vec<u8>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let value = self.with(py, move |c| c.sget(&key))?;
        Ok(value.map(|v| PyBytes::new(py, &v)))
    }

    fn set(&self, py: Python<'_>, key: Vec<u8>, value: Vec<u8>) -> PyResult<()> {
        self.with(py, move |c| c.set(&key, &value))
    }

    fn delete(&self, py: Python<'_>, key: Vec<u8>) -> PyResult<()> {
        self.with(py, move |c| c.delete(&key))
    }

    fn ping(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |c| c.ping())
    }

    /// Runs one admin line (`MEMBER ...`, `TRANSFER ...`) through the leader,
    /// following redirects; `True` for `OK`, a list of words for `MEMBERS`.
    fn admin<'py>(&self, py: Python<'py>, line: String) -> PyResult<Bound<'py, PyAny>> {
        let request = match Request::parse(line.as_bytes()) {
            Ok(Some(request @ (Request::Member(_) | Request::Transfer(_)))) => request,
            Ok(_) => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "not an admin command: {line:?}"
                )));
            }
            Err(err) => return Err(pyo3::exceptions::PyValueError::new_err(err.to_string())),
        };
        let reply = self.with(py, move |c| c.execute(&request))?;
        reply_to_py(py, reply)
    }

    fn status(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        self.with(py, |c| c.status())
    }

    /// Sends `(command, key, value)` triples in one go and returns one result
    /// per command: bytes or None for reads, True for writes, or an exception
    /// instance (not raised) for a failed command.
    fn pipeline<'py>(
        &self,
        py: Python<'py>,
        commands: Vec<(String, Vec<u8>, Option<Vec<u8>>)>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let requests = commands
            .into_iter()
            .map(to_request)
            .collect::<PyResult<Vec<_>>>()?;
        let replies = self.with(py, move |c| c.pipeline(&requests))?;
        replies
            .into_iter()
            .map(|reply| reply_to_py(py, reply))
            .collect()
    }

    /// `(mod_rev, value)` or None.
    fn get_rev<'py>(
        &self,
        py: Python<'py>,
        key: Vec<u8>,
    ) -> PyResult<Option<(u64, Bound<'py, PyBytes>)>> {
        let found = self.with(py, move |c| c.get_rev(&key))?;
        Ok(found.map(|(rev, v)| (rev, PyBytes::new(py, &v))))
    }

    fn cas(
        &self,
        py: Python<'_>,
        key: Vec<u8>,
        value: Vec<u8>,
        expected_rev: u64,
    ) -> PyResult<u64> {
        self.with(py, move |c| c.cas(&key, &value, expected_rev))
    }

    fn cad(&self, py: Python<'_>, key: Vec<u8>, expected_rev: u64) -> PyResult<u64> {
        self.with(py, move |c| c.cad(&key, expected_rev))
    }

    /// One page: `(revision, more, [(key, mod_rev, value), ...])`.
    #[pyo3(signature = (prefix, after, limit))]
    #[allow(clippy::type_complexity)]
    fn scan_page<'py>(
        &self,
        py: Python<'py>,
        prefix: Option<Vec<u8>>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> PyResult<(
        u64,
        bool,
        Vec<(Bound<'py, PyBytes>, u64, Bound<'py, PyBytes>)>,
    )> {
        let page = self.with(py, move |c| {
            c.scan_page(prefix.as_deref(), after.as_deref(), limit)
        })?;
        let entries = page
            .entries
            .iter()
            .map(|(k, rev, v)| (PyBytes::new(py, k), *rev, PyBytes::new(py, v)))
            .collect();
        Ok((page.revision, page.more, entries))
    }

    /// A watch stream of its own (its own connections).
    #[pyo3(signature = (prefix, start_rev))]
    fn watch(
        &self,
        py: Python<'_>,
        prefix: Option<Vec<u8>>,
        start_rev: u64,
    ) -> PyResult<NativeWatch> {
        let stream = self.with(py, move |c| Ok(c.watch(prefix.as_deref(), start_rev)))?;
        Ok(NativeWatch::new(stream))
    }

    /// Waits for the client lock with the GIL released: a call in flight
    /// on another thread holds it, and no Python thread may freeze meanwhile.
    fn close(&self, py: Python<'_>) {
        py.detach(|| {
            if let Ok(mut client) = self.inner.lock() {
                client.close();
            }
        })
    }

    #[getter]
    fn current_addr(&self) -> String {
        self.addr.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

fn to_request((command, key, value): (String, Vec<u8>, Option<Vec<u8>>)) -> PyResult<Request> {
    let bad = |msg: &str| pyo3::exceptions::PyValueError::new_err(format!("{command}: {msg}"));
    let request = match (command.to_ascii_uppercase().as_str(), value) {
        ("GET", None) => Request::Get(Get { key, stale: false }),
        ("SGET", None) => Request::Get(Get { key, stale: true }),
        ("SET", Some(value)) => Request::Set(Set { key, value }),
        ("DELETE", None) => Request::Delete(Delete { key }),
        ("PING", None) => Request::Ping(Ping),
        ("STATUS", None) => Request::Status(StatusCmd),
        ("SET", None) => return Err(bad("needs a value")),
        (_, Some(_)) => return Err(bad("takes no value")),
        _ => return Err(bad("unknown command")),
    };
    Ok(request)
}

fn reply_to_py(py: Python<'_>, reply: Reply) -> PyResult<Bound<'_, PyAny>> {
    let error = match reply {
        Reply::Value(value) => return Ok(PyBytes::new(py, &value).into_any()),
        Reply::NotFound => return Ok(py.None().into_bound(py)),
        Reply::Ok | Reply::Pong => {
            return Ok(pyo3::types::PyBool::new(py, true).to_owned().into_any());
        }
        Reply::Status(fields) => return fields.into_pyobject(py).map(|v| v.into_any()),
        Reply::Members(members) => return members.into_pyobject(py).map(|v| v.into_any()),
        Reply::NotLeader(addr) => ClientError::NotLeader { addr },
        Reply::NoLeader => ClientError::NoLeader,
        Reply::Dropped(reason) => ClientError::Server(reason),
        Reply::Unknown(reason) => ClientError::Indeterminate(reason),
        Reply::NoSpace(reason) => ClientError::Server(format!("NOSPACE {reason}")),
        Reply::Busy(reason) => ClientError::Server(format!("BUSY {reason}")),
        Reply::Error(reason) => ClientError::Server(reason),
        other => ClientError::Protocol(format!("unexpected pipeline reply {other:?}")),
    };
    Ok(client_error(py, error)
        .into_value(py)
        .into_bound(py)
        .into_any())
}
