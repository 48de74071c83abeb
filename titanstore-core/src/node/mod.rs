//! A running TitanStore node: the one place where the Raft core, storage, the
//! transport and the client server meet.
//!
//! [`run`] opens the data dir, recovers, starts the storage thread, the gRPC
//! endpoint, one sender per peer and the client server, then drives the Raft
//! core from a single event loop until the shutdown future completes.

mod event_loop;
mod handle;
mod join;
pub mod replica;
mod sched;
pub mod storage_thread;
mod tick_clock;
pub mod watches;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use handle::NodeHandle;
pub use replica::{DecodedSnapshot, Effect, Replica, ReplicaConfig, Token};
pub use watches::ApiConfig;

use crate::metrics::Metrics;
use crate::raft::{Bootstrap, RaftConfig, RaftNode, ReadMode};
use crate::server::{self, ServerConfig};
use crate::state_machine::StateMachine;
use crate::storage::{self, Recovered, Storage};
use crate::transport::{self, Dialer, PeerSender, PeerTls, SnapshotSource};
use crate::types::{ClusterConfig, MemberAddr, NodeId, SnapshotMeta};

/// Another member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: NodeId,
    /// `host:port` of its Raft endpoint.
    pub raft_addr: String,
    /// `host:port` clients use to reach it.
    pub client_addr: String,
}

/// Everything a node needs to know to run.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub peers: Vec<Peer>,
    /// This node's Raft address as peers know it.
    pub advertise_raft_addr: String,
    /// This node's client address as clients should use it (in redirects).
    pub advertise_client_addr: String,
    pub data_dir: PathBuf,
    /// Raft time unit; timeouts below are rounded to whole ticks.
    pub tick: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    /// Take a snapshot once this many entries were applied since the last one.
    pub snapshot_threshold: u64,
    /// How long a client request may wait for commit or read confirmation.
    pub request_timeout: Duration,
    pub server: ServerConfig,
    /// Client addresses of a running cluster to join (instead of `peers`);
    /// used only when the data dir holds no state yet.
    pub join: Vec<String>,
    /// Join as a learner only.
    pub join_as_learner: bool,
    /// Where to reach members, overriding the configuration's addresses.
    pub peer_addrs: std::collections::HashMap<NodeId, String>,
    /// Mutual TLS between nodes (off: plaintext gRPC).
    pub peer_tls: Option<PeerTls>,
    /// How linearizable reads are confirmed (lease mode: see `raft/lease.rs`).
    pub read_mode: ReadMode,
    /// Lease mode: the clock-drift bound between nodes, in percent.
    pub lease_drift_percent: u64,
    /// Bytes of the newest log entries held in memory (older ones are read
    /// back from the WAL when needed).
    pub log_cache_bytes: u64,
}

impl NodeConfig {
    /// A config with the spec's defaults for a node with no peers.
    pub fn new(id: impl Into<NodeId>, data_dir: impl Into<PathBuf>) -> NodeConfig {
        NodeConfig {
            id: id.into(),
            peers: Vec::new(),
            advertise_raft_addr: String::new(),
            advertise_client_addr: String::new(),
            data_dir: data_dir.into(),
            tick: Duration::from_millis(10),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            heartbeat_interval: Duration::from_millis(50),
            snapshot_threshold: 100_000,
            request_timeout: Duration::from_secs(5),
            server: ServerConfig::default(),
            join: Vec::new(),
            join_as_learner: false,
            peer_addrs: std::collections::HashMap::new(),
            peer_tls: None,
            read_mode: ReadMode::Index,
            lease_drift_percent: 10,
            log_cache_bytes: 4 << 20,
        }
    }

    fn ticks(&self, d: Duration) -> u64 {
        let tick = self.tick.as_micros().max(1);
        (d.as_micros() / tick).max(1) as u64
    }

    /// The Raft core's tunables; a new seed and incarnation at every call.
    pub fn raft_config(&self) -> RaftConfig {
        let mut raft = RaftConfig::new(self.id.clone());
        raft.election_timeout_min_ticks = self.ticks(self.election_timeout_min);
        raft.election_timeout_max_ticks = self
            .ticks(self.election_timeout_max)
            .max(raft.election_timeout_min_ticks + 1);
        raft.heartbeat_ticks = self.ticks(self.heartbeat_interval);
        raft.seed = seed_from_clock(&self.id);
        raft.incarnation = raft.seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
        raft.bootstrap_grace_ticks = 10 * raft.election_timeout_max_ticks;
        raft.read_mode = self.read_mode;
        raft.lease_drift_percent = self.lease_drift_percent;
        raft.log_cache_bytes = self.log_cache_bytes;
        raft
    }

    /// The replica's tunables.
    pub fn replica_config(&self) -> ReplicaConfig {
        let election_max = self.ticks(self.election_timeout_max);
        ReplicaConfig {
            id: self.id.clone(),
            advertise_client_addr: self.advertise_client_addr.clone(),
            snapshot_threshold: self.snapshot_threshold,
            snapshot_log_bytes: 64 << 20,
            // ~3 ms of encoding a pass on this kind of machine.
            snapshot_slice_keys: 16_384,
            request_timeout_ticks: self.ticks(self.request_timeout),
            disk_stall_ticks: (5 * election_max).max(self.ticks(Duration::from_secs(1))),
            record_applied: false,
            seed: seed_from_clock(&self.id).rotate_left(29),
            api: ApiConfig {
                watch_progress_ticks: self.ticks(Duration::from_secs(1)),
                ..ApiConfig::default()
            },
        }
    }

    /// The membership given on the command line, this node included.
    pub fn initial_membership(&self) -> ClusterConfig {
        let mut voters = BTreeMap::new();
        voters.insert(
            self.id.clone(),
            MemberAddr {
                raft_addr: self.advertise_raft_addr.clone(),
                client_addr: self.advertise_client_addr.clone(),
            },
        );
        for peer in &self.peers {
            voters.insert(
                peer.id.clone(),
                MemberAddr {
                    raft_addr: peer.raft_addr.clone(),
                    client_addr: peer.client_addr.clone(),
                },
            );
        }
        ClusterConfig {
            voters,
            learners: BTreeMap::new(),
            incarnations: BTreeMap::new(),
        }
    }
}

fn seed_from_clock(id: &str) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    id.bytes()
        .fold(nanos ^ u64::from(std::process::id()), |acc, b| {
            acc.rotate_left(5) ^ u64::from(b)
        })
}

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("cannot start the Raft core: {0}")]
    Raft(String),
    #[error("corrupt snapshot image: {0}")]
    Snapshot(String),
    #[error("storage failed while running: {0}")]
    StorageFailed(String),
    #[error("refusing to take part in the cluster: {0}")]
    Refused(String),
    #[error("cannot join the cluster: {0}")]
    Join(String),
    #[error("the raft endpoint stopped receiving peer messages")]
    RaftEndpointStopped,
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
    #[error("raft endpoint failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The node's snapshot file, as the peer senders read it: each send opens
/// it and reads its image piece by piece, so no copy stays in memory.
struct DiskSnapshots {
    dir: PathBuf,
}

impl SnapshotSource for DiskSnapshots {
    fn open(&self) -> Result<Option<Arc<storage::SnapshotFile>>, String> {
        storage::open_snapshot_file(&self.dir)
            .map(|file| file.map(Arc::new))
            .map_err(|err| err.to_string())
    }
}

/// Builds a node's replica from what its storage recovered: the state
/// machine from the snapshot, the core from the hard state and the log.
/// A node that recovered nothing at all starts "fresh" (see the core's
/// bootstrap gate). The runtime and the whole-node simulation both boot here.
pub fn boot(
    mut raft_config: RaftConfig,
    replica_config: ReplicaConfig,
    membership: ClusterConfig,
    recovered: Recovered,
) -> Result<Replica, NodeError> {
    let fresh = !recovered.holds_state();
    raft_config.fresh = fresh;
    let (kv, snapshot_meta) = match &recovered.snapshot {
        Some(snapshot) => {
            let kv = StateMachine::from_image(&snapshot.meta, &snapshot.data)
                .map_err(|err| NodeError::Snapshot(err.to_string()))?;
            (kv, snapshot.meta.clone())
        }
        None => (
            StateMachine::new(),
            SnapshotMeta {
                last_index: 0,
                last_term: 0,
                config: membership,
            },
        ),
    };
    tracing::info!(
        id = %replica_config.id,
        snapshot_index = snapshot_meta.last_index,
        entries = recovered.stored.terms.len() + recovered.entries.len(),
        in_memory = recovered.entries.len(),
        term = recovered.hard_state.term,
        fresh,
        "recovered state"
    );
    let boot = Bootstrap {
        hard_state: recovered.hard_state,
        snapshot: snapshot_meta.clone(),
        stored: recovered.stored,
        entries: recovered.entries,
        applied: snapshot_meta.last_index,
    };
    let raft = RaftNode::new(raft_config, boot).map_err(|err| NodeError::Raft(err.to_string()))?;
    Ok(Replica::new(replica_config, raft, kv, snapshot_meta))
}

/// How a joining node announces itself: `<id>:<host of the advertised
/// client address>:<raft port>:<client port>`.
fn own_spec(config: &NodeConfig) -> Result<crate::protocol::MemberSpec, NodeError> {
    let port = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| NodeError::Join(format!("'{addr}' has no port")))
    };
    let host = config
        .advertise_client_addr
        .rsplit_once(':')
        .map(|(h, _)| h.to_string())
        .ok_or_else(|| NodeError::Join("the advertised client address has no host".into()))?;
    Ok(crate::protocol::MemberSpec {
        id: config.id.clone(),
        host,
        raft_port: port(&config.advertise_raft_addr)?,
        client_port: port(&config.advertise_client_addr)?,
    })
}

/// The sockets a node serves on, bound by the caller (so that port 0 works
/// and a busy port fails before anything starts).
pub struct Listeners {
    pub raft: TcpListener,
    pub client: TcpListener,
    /// `GET /metrics` and `GET /health` (`--metrics-addr`).
    pub metrics: Option<TcpListener>,
}

/// Runs a node until `shutdown` completes or storage fails.
pub async fn run(
    config: NodeConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let Listeners {
        raft: raft_listener,
        client: client_listener,
        metrics: metrics_listener,
    } = listeners;
    let mut config = config;
    let metrics =
        Metrics::new(config.data_dir.clone()).map_err(|err| NodeError::Metrics(err.to_string()))?;
    let options = storage::StorageOptions {
        recovered_entry_bytes: config.log_cache_bytes,
        ..storage::StorageOptions::default()
    };
    let (storage, recovered) = Storage::open(Arc::new(storage::RealFs), &config.data_dir, options)?;
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(?torn, "cut off a torn record at the end of the WAL");
    }
    let holds_state = recovered.holds_state();
    let joining = !config.join.is_empty() && !holds_state;
    if !config.join.is_empty() && holds_state {
        tracing::info!("the data dir holds state: --join is ignored");
    }
    let me = joining.then(|| own_spec(&config)).transpose()?;
    // A node that joined keeps its incarnation for good (see `join.rs`).
    let incarnation = join::incarnation(&config.data_dir, joining)?;
    let membership = if joining {
        // Learn the members first, to answer the leader before the log says who they are.
        let addrs = config.join.clone();
        let id = config.id.clone();
        config.peers = tokio::task::spawn_blocking(move || join::discover(&addrs, &id))
            .await
            .map_err(|e| NodeError::Join(e.to_string()))??;
        ClusterConfig::default()
    } else {
        config.initial_membership()
    };
    let mut raft_config = config.raft_config();
    raft_config.member_incarnation = incarnation;
    let replica = boot(raft_config, config.replica_config(), membership, recovered)?;
    let (job_tx, job_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (snapshot_tx, snapshot_rx) = std::sync::mpsc::channel();
    let writer = storage.snapshot_writer();
    let writer_done = done_tx.clone();
    let writer_metrics = Arc::clone(&metrics);
    let snapshot_thread = std::thread::Builder::new()
        .name(format!("{}-snapshot", config.id))
        .spawn(move || {
            storage_thread::run_snapshot_writer(writer, snapshot_rx, writer_done, writer_metrics)
        })
        .map_err(|err| NodeError::StorageFailed(err.to_string()))?;
    // Entries the log discards are freed here, not on the event loop, and
    // not on a fresh blocking thread per pass.
    let (garbage_tx, garbage_rx) = std::sync::mpsc::channel::<event_loop::Garbage>();
    let garbage_thread = std::thread::Builder::new()
        .name(format!("{}-free", config.id))
        .spawn(move || {
            while let Ok(garbage) = garbage_rx.recv() {
                drop(garbage);
            }
        })
        .map_err(|err| NodeError::StorageFailed(err.to_string()))?;
    let storage_metrics = Arc::clone(&metrics);
    let storage_thread = std::thread::Builder::new()
        .name(format!("{}-storage", config.id))
        .spawn(move || storage_thread::run(storage, job_rx, done_tx, storage_metrics))
        .map_err(|err| NodeError::StorageFailed(err.to_string()))?;

    let snapshots: Arc<dyn SnapshotSource> = Arc::new(DiskSnapshots {
        dir: config.data_dir.clone(),
    });
    let dialer = Dialer {
        snapshots,
        tls: config.peer_tls.clone().map(Arc::new),
    };
    let peers = config
        .peers
        .iter()
        .map(|peer| {
            let addr = config
                .peer_addrs
                .get(&peer.id)
                .unwrap_or(&peer.raft_addr)
                .clone();
            let sender = PeerSender::spawn(addr, &dialer);
            (peer.id.clone(), sender)
        })
        .collect();

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (inbox_tx, inbox_rx) = mpsc::channel(65_536);
    let raft_server = tokio::spawn(transport::serve(
        raft_listener,
        config.id.clone(),
        config.data_dir.clone(),
        inbox_tx,
        config.peer_tls.clone(),
        Some(transport::ImageCounters {
            received_bytes: metrics.snapshot_received_bytes.clone(),
            resumes: metrics.snapshot_resumes.clone(),
            applied_index: metrics.applied.clone(),
        }),
        stopped(stop_rx.clone()),
    ));
    let (request_tx, request_rx) = mpsc::channel(65_536);
    let client_server = tokio::spawn(server::run(
        client_listener,
        NodeHandle::new(request_tx),
        config.server.clone(),
        Arc::clone(&metrics),
        stopped(stop_rx.clone()),
    ));
    let metrics_server = metrics_listener.map(|listener| {
        tokio::spawn(crate::metrics::serve(
            listener,
            Arc::clone(&metrics),
            stopped(stop_rx.clone()),
        ))
    });

    // A join that can never succeed stops the node with its reason.
    let (join_failed_tx, join_failed_rx) = tokio::sync::oneshot::channel::<NodeError>();
    if let (Some(me), Some(inc)) = (me, incarnation) {
        let addrs = config.join.clone();
        let timeout = config.request_timeout;
        let learner = config.join_as_learner;
        tokio::task::spawn_blocking(move || {
            if let Err(err) = join::join(&addrs, &me, inc, learner, timeout) {
                let _ = join_failed_tx.send(err);
            }
        });
    }
    let join_error = Arc::new(std::sync::Mutex::new(None));
    let join_error_slot = Arc::clone(&join_error);
    let shutdown = async move {
        tokio::pin!(shutdown);
        tokio::select! {
            _ = &mut shutdown => {}
            Ok(err) = join_failed_rx => {
                tracing::error!(%err, "giving up");
                if let Ok(mut slot) = join_error_slot.lock() {
                    *slot = Some(err);
                }
            }
        }
    };
    let event_loop = event_loop::EventLoop::new(
        replica,
        config.tick,
        peers,
        config.peer_addrs.clone(),
        dialer.clone(),
        event_loop::Workers {
            storage: job_tx,
            snapshot_writer: snapshot_tx,
            garbage: garbage_tx,
        },
        metrics,
    );
    let result = event_loop
        .run(inbox_rx, request_rx, done_rx, shutdown)
        .await;
    let result = match join_error.lock().ok().and_then(|mut slot| slot.take()) {
        Some(err) => Err(err),
        None => result,
    };

    let _ = stop_tx.send(true);
    let _ = client_server.await;
    if let Some(server) = metrics_server {
        let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    }
    // Peers hold long-lived streams open: give the endpoint a moment, not forever.
    let raft_result = tokio::time::timeout(Duration::from_secs(1), raft_server).await;
    // The event loop dropped the job sender: the storage thread drains and exits.
    let _ = tokio::task::spawn_blocking(move || {
        let _ = snapshot_thread.join();
        let _ = garbage_thread.join();
        storage_thread.join()
    })
    .await;
    tracing::info!("node stopped");
    result?;
    match raft_result {
        Ok(Ok(Err(err))) => Err(NodeError::Transport(err)),
        _ => Ok(()),
    }
}
