//! `Proxy`: a TCP relay the cluster harness puts on every ordered pair of
//! nodes, so faults are injected outside the nodes (they carry no test code).
//!
//! Modes, as toxiproxy has them: `pass` relays bytes (optionally delayed),
//! `blackhole` accepts and swallows everything, `reset` closes every
//! connection at once. Leaving `pass` closes the connections that are open,
//! so a partition cuts traffic both ways immediately.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::errors::harness_error;

const PASS: u8 = 0;
const BLACKHOLE: u8 = 1;
const RESET: u8 = 2;

/// One small runtime per process runs every proxy in the background.
fn runtime() -> Result<&'static Runtime, String> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("titanstore-proxy")
                .enable_all()
                .build()
                .map_err(|err| err.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

struct Shared {
    mode: AtomicU8,
    latency_ms: AtomicU64,
    target: Mutex<String>,
    /// Bumped on every mode change; open connections end when it moves.
    epoch: watch::Sender<u64>,
}

#[pyclass(module = "titanstore._titanstore")]
pub struct Proxy {
    shared: Arc<Shared>,
    port: u16,
    host: String,
    closed: watch::Sender<bool>,
}

#[pymethods]
impl Proxy {
    /// Listens on `host:port` (port 0 picks a free one) and relays to `target`.
    #[new]
    #[pyo3(signature = (target, host = "127.0.0.1".to_string(), port = 0))]
    fn new(py: Python<'_>, target: String, host: String, port: u16) -> PyResult<Self> {
        let rt = runtime().map_err(|err| harness_error(py, err))?;
        let addr = format!("{host}:{port}");
        let listener = py
            .detach(|| rt.block_on(TcpListener::bind(&addr)))
            .map_err(|err| harness_error(py, format!("proxy cannot listen on {addr}: {err}")))?;
        let port = listener
            .local_addr()
            .map_err(|err| harness_error(py, err.to_string()))?
            .port();
        let (epoch, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(PASS),
            latency_ms: AtomicU64::new(0),
            target: Mutex::new(target),
            epoch,
        });
        let (closed, closed_rx) = watch::channel(false);
        rt.spawn(accept_loop(listener, Arc::clone(&shared), closed_rx));
        Ok(Proxy {
            shared,
            port,
            host,
            closed,
        })
    }

    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// `host:port` the proxy listens on.
    #[getter]
    fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    #[getter]
    fn target(&self) -> String {
        self.shared
            .target
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Where new connections are relayed to.
    #[setter]
    fn set_target(&self, target: String) {
        if let Ok(mut t) = self.shared.target.lock() {
            *t = target;
        }
    }

    #[getter]
    fn mode(&self) -> &'static str {
        match self.shared.mode.load(Ordering::SeqCst) {
            PASS => "pass",
            BLACKHOLE => "blackhole",
            _ => "reset",
        }
    }

    /// `"pass"`, `"blackhole"` or `"reset"`. Any change closes open connections.
    #[setter]
    fn set_mode(&self, mode: &str) -> PyResult<()> {
        let value = match mode {
            "pass" => PASS,
            "blackhole" => BLACKHOLE,
            "reset" => RESET,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "unknown proxy mode {other:?}; use 'pass', 'blackhole' or 'reset'"
                )));
            }
        };
        if self.shared.mode.swap(value, Ordering::SeqCst) != value {
            self.shared.epoch.send_modify(|e| *e += 1);
        }
        Ok(())
    }

    /// Delay added to every relayed chunk, in milliseconds.
    #[getter]
    fn latency_ms(&self) -> u64 {
        self.shared.latency_ms.load(Ordering::SeqCst)
    }

    #[setter]
    fn set_latency_ms(&self, ms: u64) {
        self.shared.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection.
    fn close(&self) {
        let _ = self.closed.send(true);
        self.shared.epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.close();
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut closed: watch::Receiver<bool>,
) {
    loop {
        let socket = tokio::select! {
            _ = async { let _ = closed.wait_for(|c| *c).await; } => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        tokio::spawn(serve(socket, Arc::clone(&shared)));
    }
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut epoch = shared.epoch.subscribe();
    epoch.mark_unchanged();
    match shared.mode.load(Ordering::SeqCst) {
        RESET => {
            // Dropping with SO_LINGER 0 would send RST; a plain close is enough
            // for peers to see the connection fail at once.
            drop(client);
        }
        BLACKHOLE => {
            let (mut read, _write) = client.into_split();
            let mut sink = [0u8; 16 * 1024];
            loop {
                tokio::select! {
                    _ = epoch.changed() => return,
                    n = read.read(&mut sink) => match n {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    },
                }
            }
        }
        _ => {
            let target = shared.target.lock().map(|t| t.clone()).unwrap_or_default();
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (up_read, up_write) = upstream.into_split();
            tokio::select! {
                _ = epoch.changed() => {}
                _ = relay(client_read, up_write, &shared) => {}
                _ = relay(up_read, client_write, &shared) => {}
            }
        }
    }
}

async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        let latency = shared.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        // Checked after the read: bytes a node sent after the link was cut
        // must never pass, even before this connection sees the change.
        if shared.mode.load(Ordering::SeqCst) != PASS {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
