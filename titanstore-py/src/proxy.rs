//! `Proxy`: a TCP relay the cluster harness puts on every ordered pair of
//! nodes, so faults are injected outside the nodes (they carry no test code).
//!
//! Modes, as toxiproxy and iptables have them:
//! - `pass` relays bytes, each chunk delayed by `latency_ms` plus a random
//!   `0..=jitter_ms` (order kept). Reading goes on while earlier chunks wait,
//!   so latency delays a link without capping its throughput.
//! - `blackhole` is a silent drop (`iptables -j DROP`): open connections stay
//!   open and every byte either way is discarded; new connections are accepted
//!   and swallow everything. A connection that lost bytes is closed when the
//!   link passes again (its stream has a hole no peer could parse).
//! - `reset` closes every connection at once and refuses new ones.
//!
//! Entering `reset` ends open connections; entering `blackhole` does not.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::errors::harness_error;

const PASS: u8 = 0;
const BLACKHOLE: u8 = 1;
const RESET: u8 = 2;
/// After `close()`: every connection ends.
const CLOSED: u8 = 3;

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
    jitter_ms: AtomicU64,
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
    /// `seed` makes the jitter of each connection reproducible.
    #[pyo3(signature = (target, host = "127.0.0.1".to_string(), port = 0, seed = 0))]
    fn new(py: Python<'_>, target: String, host: String, port: u16, seed: u64) -> PyResult<Self> {
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
            jitter_ms: AtomicU64::new(0),
            target: Mutex::new(target),
            epoch,
        });
        let (closed, closed_rx) = watch::channel(false);
        rt.spawn(accept_loop(listener, Arc::clone(&shared), closed_rx, seed));
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
            RESET => "reset",
            _ => "closed",
        }
    }

    /// `"pass"`, `"blackhole"` or `"reset"`. `reset` closes open connections;
    /// `pass` closes those that lost bytes to a blackhole.
    #[setter]
    fn set_mode(&self, py: Python<'_>, mode: &str) -> PyResult<()> {
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
        let old = self.shared.mode.load(Ordering::SeqCst);
        if old == CLOSED {
            return Err(harness_error(py, "the proxy is closed".into()));
        }
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

    /// A random extra delay of `0..=jitter_ms` per chunk, in milliseconds.
    #[getter]
    fn jitter_ms(&self) -> u64 {
        self.shared.jitter_ms.load(Ordering::SeqCst)
    }

    #[setter]
    fn set_jitter_ms(&self, ms: u64) {
        self.shared.jitter_ms.store(ms, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection.
    fn close(&self) {
        self.shared.mode.store(CLOSED, Ordering::SeqCst);
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
    seed: u64,
) {
    let mut connection = 0u64;
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
        connection += 1;
        let seed = seed.wrapping_mul(0x0100_0000_01b3).wrapping_add(connection);
        tokio::spawn(serve(socket, Arc::clone(&shared), seed));
    }
}

async fn serve(client: TcpStream, shared: Arc<Shared>, seed: u64) {
    let mut epoch = shared.epoch.subscribe();
    epoch.mark_unchanged();
    // Checked after subscribing: a close or reset from here on is seen
    // either in the mode or as an epoch change (a connection the kernel
    // accepted just before a close must not relay afterwards).
    match shared.mode.load(Ordering::SeqCst) {
        RESET | CLOSED => drop(client),
        BLACKHOLE => swallow(client, &shared, epoch).await,
        _ => {
            let target = shared.target.lock().map(|t| t.clone()).unwrap_or_default();
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            let (client_read, client_write) = client.into_split();
            let (up_read, up_write) = upstream.into_split();
            let lost = AtomicBool::new(false);
            tokio::select! {
                _ = until_closed(&shared, &lost, epoch) => {}
                _ = relay(client_read, up_write, &shared, &lost, seed) => {}
                _ = relay(up_read, client_write, &shared, &lost, seed ^ 0x9e37_79b9) => {}
            }
        }
    }
}

/// A connection accepted during a blackhole: it reached no one, so it reads
/// and discards until the mode changes, then closes.
async fn swallow(client: TcpStream, shared: &Shared, mut epoch: watch::Receiver<u64>) {
    let (mut read, _write) = client.into_split();
    let mut sink = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            changed = epoch.changed() => {
                if changed.is_err() || shared.mode.load(Ordering::SeqCst) != BLACKHOLE {
                    return;
                }
            }
            n = read.read(&mut sink) => match n {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}

/// Returns when a relayed connection must end: the proxy resets or closes,
/// or the link passes again after bytes were dropped.
async fn until_closed(shared: &Shared, lost: &AtomicBool, mut epoch: watch::Receiver<u64>) {
    loop {
        if epoch.changed().await.is_err() {
            return;
        }
        match shared.mode.load(Ordering::SeqCst) {
            RESET | CLOSED => return,
            PASS if lost.load(Ordering::SeqCst) => return,
            _ => {}
        }
    }
}

/// Chunks in flight on one direction of a link before reading waits.
const IN_FLIGHT: usize = 256;

/// One direction: a reader stamps each chunk with its delivery time, a writer
/// delivers it then; a chunk read or due during a blackhole is dropped.
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    shared: &Shared,
    lost: &AtomicBool,
    seed: u64,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let read = async move {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut last = Instant::now();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Checked after every read: bytes sent after a cut never pass.
            match shared.mode.load(Ordering::SeqCst) {
                PASS => {}
                BLACKHOLE if drop_chunk(shared, lost) => continue,
                _ => return,
            }
            let latency = shared.latency_ms.load(Ordering::Relaxed);
            let jitter = shared.jitter_ms.load(Ordering::Relaxed);
            let extra = if jitter > 0 {
                rng.random_range(0..=jitter)
            } else {
                0
            };
            // Never before an earlier chunk: TCP keeps order.
            let due = (Instant::now() + Duration::from_millis(latency + extra)).max(last);
            last = due;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // And at delivery: a chunk in flight when the link is cut is lost.
            match shared.mode.load(Ordering::SeqCst) {
                PASS => {}
                BLACKHOLE if drop_chunk(shared, lost) => continue,
                _ => return,
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        // The reader saw end of stream and everything before it is delivered.
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Marks the connection as having lost bytes; false when the blackhole
/// ended meanwhile (the supervisor may have looked before the mark), so the
/// caller ends the connection itself rather than pass a stream with a hole.
fn drop_chunk(shared: &Shared, lost: &AtomicBool) -> bool {
    lost.store(true, Ordering::SeqCst);
    shared.mode.load(Ordering::SeqCst) == BLACKHOLE
}
