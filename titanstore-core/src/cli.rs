//! The `titanstore-server` command line, shared by the native binary and the
//! Python package's `run_node(argv)`: both call [`main_from`].
//!
//! Bad flags get clap's message and exit code 2, never a panic; `main_from`
//! never calls `process::exit`, so it is safe to call inside Python.

use std::ffi::OsString;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;

use crate::node::{self, NodeConfig, Peer};
use crate::raft::ReadMode;
use crate::server::ServerConfig;
use crate::transport::PeerTls;

/// One TitanStore node: Raft over gRPC between nodes, plaintext protocol for clients.
#[derive(Debug, Parser)]
#[command(name = "titanstore-server", version, about)]
pub struct Args {
    /// This node's id (must be unique in the cluster), e.g. node1.
    #[arg(long)]
    pub id: String,
    /// Port of the Raft (gRPC) endpoint; 0 picks a free port.
    #[arg(long, default_value_t = 5001)]
    pub port: u16,
    /// Port of the client (plaintext) endpoint; 0 picks a free port.
    #[arg(long, default_value_t = 6001)]
    pub client_port: u16,
    /// Address to bind both endpoints to.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// host:port other nodes and redirects give clients for this node
    /// [default: localhost:<client port>].
    #[arg(long)]
    pub advertise_client_addr: Option<String>,
    /// host:port peers use for this node's Raft endpoint [default: localhost:<port>].
    #[arg(long)]
    pub advertise_raft_addr: Option<String>,
    /// The other members: id:host:raft_port:client_port, comma-separated.
    /// Leave out for a single-node cluster.
    #[arg(long, value_delimiter = ',', value_parser = parse_peer)]
    pub peers: Vec<Peer>,
    /// Client addresses (host:port, comma-separated) of a running cluster to
    /// join as a new member, instead of --peers. Needs an empty data dir;
    /// ignored once the data dir holds state, so restarts need no change.
    #[arg(long, value_delimiter = ',', conflicts_with = "peers")]
    pub join: Vec<String>,
    /// With --join: ask to be added as a learner (never promoted by itself).
    #[arg(long, requires = "join")]
    pub join_as_learner: bool,
    /// Reach member ID at HOST:PORT instead of the address in the cluster's
    /// configuration (ID=HOST:PORT, comma-separated; e.g. through a proxy).
    #[arg(long, value_delimiter = ',', value_parser = parse_peer_addr)]
    pub peer_addr: Vec<(String, String)>,
    /// Where the WAL and snapshots live [default: ./data/<id>].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Lower bound of the randomized election timeout, in ms.
    #[arg(long, default_value_t = 150)]
    pub election_timeout_min_ms: u64,
    /// Upper bound (exclusive) of the randomized election timeout, in ms.
    #[arg(long, default_value_t = 300)]
    pub election_timeout_max_ms: u64,
    /// Leader heartbeat interval, in ms.
    #[arg(long, default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Snapshot (and compact the WAL) after this many applied entries.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_threshold: u64,
    /// Longest accepted client request line, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
    /// How long a client request may wait for commit, in ms.
    #[arg(long, default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long, default_value = "info")]
    pub log: String,
    /// PEM certificate this node presents to peers, as server and as client
    /// (its subject alt names must include the host peers dial it at).
    #[arg(long, requires_all = ["peer_tls_key", "peer_tls_ca"])]
    pub peer_tls_cert: Option<PathBuf>,
    /// PEM private key of --peer-tls-cert.
    #[arg(long, requires_all = ["peer_tls_cert", "peer_tls_ca"])]
    pub peer_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): a peer whose certificate they did not sign is
    /// refused at the handshake. With the two above: mutual TLS between nodes.
    #[arg(long, requires_all = ["peer_tls_cert", "peer_tls_key"])]
    pub peer_tls_ca: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// host:port to serve GET /metrics (Prometheus text) and GET /health on.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Client connections served at once; one more gets `ERR BUSY` and is
    /// closed [default: the open-file limit (raised to its hard limit at
    /// start) minus 256 kept for the node's own files and peers].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Seconds a client connection may go without completing a request line
    /// (and with none in flight) before it is closed; fractions allowed.
    #[arg(long, default_value_t = 300.0)]
    pub client_idle_timeout: f64,
    /// Bytes of client request lines in flight on all connections together;
    /// further requests get `ERR BUSY` until replies free room.
    #[arg(long, default_value_t = 256 << 20)]
    pub max_inflight_bytes: usize,
    /// How the leader confirms a linearizable read (GET, GETREV, SCAN).
    /// `index`: a heartbeat round a majority acknowledged (safe whatever the
    /// clocks do). `lease`: answered at once while the leader holds a lease
    /// (a majority acknowledged a heartbeat sent less than
    /// (election-timeout-min - 1 tick) x (1 - drift) - 2 ticks ago), else as
    /// `index`. Lease mode ASSUMES every node's monotonic clock runs at the
    /// real rate within --lease-drift-percent and that no node pauses beyond
    /// that margin unnoticed (a leader whose event loop stalled or that was
    /// SIGSTOPped drops its lease on resuming; a suspended machine, whose
    /// clock stops too, is not noticed); if that fails, a read may return
    /// stale data. See the README, "Read modes".
    #[arg(long, value_enum, default_value_t = ReadModeArg::Index)]
    pub read_mode: ReadModeArg,
    /// With --read-mode lease: the clock-drift bound between nodes, in
    /// percent (0..100); the lease is shortened by it.
    #[arg(long, default_value_t = 10)]
    pub lease_drift_percent: u64,
    /// MiB of the newest log entries kept in memory; older ones are read
    /// back from the WAL when a lagging follower or a restart needs them
    /// (0: only entries not yet durable or applied).
    #[arg(long, default_value_t = 4)]
    pub log_cache_mb: u64,
}

/// `--read-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReadModeArg {
    /// ReadIndex: one heartbeat round per batch of reads.
    Index,
    /// Leader lease, falling back to ReadIndex outside it.
    Lease,
}

impl From<ReadModeArg> for ReadMode {
    fn from(mode: ReadModeArg) -> ReadMode {
        match mode {
            ReadModeArg::Index => ReadMode::Index,
            ReadModeArg::Lease => ReadMode::Lease,
        }
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Open files the node keeps for itself (WAL, snapshots, peers, metrics)
/// when it sizes the default `--max-connections`.
const RESERVED_FDS: u64 = 256;

/// Parses `id=host:port`.
pub fn parse_peer_addr(text: &str) -> Result<(String, String), String> {
    let (id, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not id=host:port"))?;
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("'{addr}' in '{text}' is not host:port"))?;
    if id.is_empty() || host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("'{text}' is not id=host:port"));
    }
    Ok((id.to_string(), addr.to_string()))
}

/// Parses `id:host:raft_port:client_port`.
pub fn parse_peer(text: &str) -> Result<Peer, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let [id, host, raft_port, client_port] = parts.as_slice() else {
        return Err(format!("'{text}' is not id:host:raft_port:client_port"));
    };
    if id.is_empty() || host.is_empty() {
        return Err(format!("'{text}' has an empty id or host"));
    }
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("'{p}' in '{text}' is not a port (1-65535)"))
    };
    Ok(Peer {
        id: id.to_string(),
        raft_addr: format!("{host}:{}", port(raft_port)?),
        client_addr: format!("{host}:{}", port(client_port)?),
    })
}

impl Args {
    /// Checks what clap cannot: relations between flags.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.contains([':', ',', ' ']) {
            return Err(format!(
                "--id '{}' must be non-empty without ':', ',' or spaces",
                self.id
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for peer in &self.peers {
            if peer.id == self.id {
                return Err(format!("--peers names this node ('{}') itself", self.id));
            }
            if !seen.insert(&peer.id) {
                return Err(format!("--peers names '{}' twice", peer.id));
            }
        }
        if self.election_timeout_min_ms == 0
            || self.election_timeout_min_ms >= self.election_timeout_max_ms
        {
            return Err(
                "--election-timeout-min-ms must be > 0 and below --election-timeout-max-ms".into(),
            );
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms >= self.election_timeout_min_ms {
            return Err("--heartbeat-ms must be > 0 and below --election-timeout-min-ms".into());
        }
        if self.read_mode == ReadModeArg::Lease {
            let mut raft = self.node_config(0, 0, 1).raft_config();
            raft.read_mode = ReadMode::Lease;
            if self.lease_drift_percent >= 100 || raft.lease_ticks() == 0 {
                return Err(format!(
                    "--read-mode lease needs --lease-drift-percent below 100 and an election \
                     timeout long enough for a lease of at least one tick (got {} ms min, {}%)",
                    self.election_timeout_min_ms, self.lease_drift_percent
                ));
            }
        }
        if !(self.client_idle_timeout.is_finite() && self.client_idle_timeout > 0.0) {
            return Err("--client-idle-timeout must be a positive number of seconds".into());
        }
        if self.max_connections == Some(0) || self.max_inflight_bytes == 0 {
            return Err("--max-connections and --max-inflight-bytes must be > 0".into());
        }
        if self.snapshot_threshold == 0 || self.max_line_bytes == 0 || self.request_timeout_ms == 0
        {
            return Err(
                "--snapshot-threshold, --max-line-bytes and --request-timeout-ms must be > 0"
                    .into(),
            );
        }
        Ok(())
    }

    /// Reads the `--peer-tls-*` files (all three or none).
    fn peer_tls(&self) -> Result<Option<PeerTls>, String> {
        let (Some(cert), Some(key), Some(ca)) =
            (&self.peer_tls_cert, &self.peer_tls_key, &self.peer_tls_ca)
        else {
            return Ok(None);
        };
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|err| format!("{flag} {}: {err}", path.display()))
        };
        Ok(Some(PeerTls {
            cert_pem: read("--peer-tls-cert", cert)?,
            key_pem: read("--peer-tls-key", key)?,
            ca_pem: read("--peer-tls-ca", ca)?,
        }))
    }

    fn node_config(&self, raft_port: u16, client_port: u16, max_connections: usize) -> NodeConfig {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("data").join(&self.id));
        let mut config = NodeConfig::new(self.id.clone(), data_dir);
        config.peers = self.peers.clone();
        config.join = self.join.clone();
        config.join_as_learner = self.join_as_learner;
        config.peer_addrs = self.peer_addr.iter().cloned().collect();
        config.advertise_raft_addr = self
            .advertise_raft_addr
            .clone()
            .unwrap_or_else(|| format!("localhost:{raft_port}"));
        config.advertise_client_addr = self
            .advertise_client_addr
            .clone()
            .unwrap_or_else(|| format!("localhost:{client_port}"));
        config.election_timeout_min = Duration::from_millis(self.election_timeout_min_ms);
        config.election_timeout_max = Duration::from_millis(self.election_timeout_max_ms);
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        config.snapshot_threshold = self.snapshot_threshold;
        config.request_timeout = Duration::from_millis(self.request_timeout_ms);
        config.read_mode = self.read_mode.into();
        config.lease_drift_percent = self.lease_drift_percent;
        config.log_cache_bytes = self.log_cache_mb.saturating_mul(1 << 20);
        config.server = ServerConfig {
            max_line_bytes: self.max_line_bytes,
            max_connections,
            idle_timeout: Duration::from_secs_f64(self.client_idle_timeout),
            max_buffered_bytes: self.max_inflight_bytes,
            ..ServerConfig::default()
        };
        config
    }
}

/// The whole process of a node binary: runs [`main_from`] on this process's
/// arguments, writes out the log lines still queued, and exits with its code.
pub fn main_process() -> ! {
    let code = main_from(std::env::args_os());
    crate::logging::finish();
    std::process::exit(code);
}

/// Runs a node from command-line arguments (`argv[0]` included) and returns
/// the process exit code: 0 after a clean shutdown, 1 on a runtime failure,
/// 2 on bad arguments.
pub fn main_from<I, T>(argv: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { 2 } else { 0 };
        }
    };
    if let Err(msg) = args.validate() {
        eprintln!("error: {msg}");
        return 2;
    }
    crate::logging::init(&args.log, args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("titanstore")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return 1;
        }
    };
    let result = runtime.block_on(serve(args));
    // Tasks still running (peer streams, lingering connections) are dropped.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => 0,
        Err(msg) => {
            eprintln!("error: {msg}");
            1
        }
    }
}

/// Raises the soft open-file limit to the hard one and sizes the default
/// `--max-connections` below it.
fn connection_limit(args: &Args) -> usize {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(%err, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    };
    let default = limit.saturating_sub(RESERVED_FDS).max(16);
    match args.max_connections {
        Some(n) => {
            if n as u64 > default {
                tracing::warn!(
                    max_connections = n,
                    open_file_limit = limit,
                    "--max-connections is above what the open-file limit leaves; \
                     accepts will fail (and be retried) when files run out"
                );
            }
            n
        }
        None => usize::try_from(default).unwrap_or(usize::MAX),
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let raft_listener = bind(args.bind, args.port, "raft").await?;
    let client_listener = bind(args.bind, args.client_port, "client").await?;
    let metrics_listener = match args.metrics_addr {
        Some(addr) => Some(bind(addr.ip(), addr.port(), "metrics").await?),
        None => None,
    };
    let raft_port = local_port(&raft_listener)?;
    let client_port = local_port(&client_listener)?;
    let max_connections = connection_limit(&args);
    let mut config = args.node_config(raft_port, client_port, max_connections);
    config.peer_tls = args.peer_tls()?;
    let metrics_note = match &metrics_listener {
        Some(listener) => format!(
            " metrics={}",
            listener.local_addr().map_err(|e| e.to_string())?
        ),
        None => String::new(),
    };
    // One parseable line on stdout: harnesses learn the bound ports from it.
    println!(
        "titanstore node {} listening raft={}:{} client={}:{} data_dir={}{metrics_note}",
        config.id,
        args.bind,
        raft_port,
        args.bind,
        client_port,
        config.data_dir.display()
    );
    let listeners = node::Listeners {
        raft: raft_listener,
        client: client_listener,
        metrics: metrics_listener,
    };
    node::run(config, listeners, shutdown_signal())
        .await
        .map_err(|err| err.to_string())
}

async fn bind(ip: IpAddr, port: u16, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(SocketAddr::new(ip, port))
        .await
        .map_err(|err| format!("cannot listen on {ip}:{port} for {what} traffic: {err}"))
}

fn local_port(listener: &TcpListener) -> Result<u16, String> {
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|err| err.to_string())
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutdown requested");
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested");
}
