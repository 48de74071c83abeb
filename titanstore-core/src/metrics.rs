//! A node's metrics (Prometheus text format 0.0.4, every name `titanstore_*`)
//! and its `--metrics-addr` HTTP endpoint: `GET /metrics` and `GET /health`.
//!
//! Who writes what: the event loop publishes the Raft state and the replica's
//! counters once per tick and times its own passes; the storage thread and
//! the snapshot writer time their fsyncs and saves; the client server counts
//! connections and times requests by command. All are lock-free atomics on
//! the hot paths (per-command handles are created once, never looked up).
//! File sizes (WAL, snapshot) are read from the data dir at scrape time.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::net::TcpListener;

use crate::raft::Role;

/// Client commands, as they are labelled in the request metrics.
pub const COMMANDS: [&str; 14] = [
    "get", "set", "del", "ping", "status", "member", "transfer", "getrev", "cas", "cad", "scan",
    "watch", "req", "invalid",
];

/// The replica's running totals, published by the event loop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaCounters {
    pub committed: u64,
    pub dropped: u64,
    pub unknown: u64,
    pub no_space: u64,
    pub leader_changes: u64,
}

/// What `/health` and the gauges need from the Raft state.
#[derive(Clone, Debug, Default)]
pub struct RaftGauges {
    pub role: Option<Role>,
    pub term: u64,
    pub leader: Option<String>,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub snapshot_index: u64,
    /// Bytes of log entries held in memory.
    pub log_cache_bytes: u64,
    pub voters: usize,
    pub learners: usize,
    pub disk_full: bool,
    pub refused: bool,
}

/// Every metric of one node. Cheap to share (`Arc`); each node has its own
/// registry, so two nodes in one process never mix their figures.
pub struct Metrics {
    registry: Registry,
    data_dir: PathBuf,
    role: IntGaugeVec,
    term: IntGauge,
    commit: IntGauge,
    pub(crate) applied: IntGauge,
    last_index: IntGauge,
    snapshot_index: IntGauge,
    log_cache_bytes: IntGauge,
    has_leader: IntGauge,
    members: IntGaugeVec,
    disk_full: IntGauge,
    leader_changes: IntCounter,
    proposals: IntCounterVec,
    pub(crate) fsync_seconds: Histogram,
    pub(crate) batch_entries: Histogram,
    pub(crate) fsyncs: IntCounter,
    wal_bytes: IntGauge,
    wal_segments: IntGauge,
    pub(crate) snapshots: IntCounter,
    pub(crate) snapshot_seconds: Histogram,
    snapshot_bytes: IntGauge,
    pub(crate) snapshot_received_bytes: IntCounter,
    pub(crate) snapshot_resumes: IntCounter,
    log_lines_dropped: IntCounter,
    peer_lag: IntGaugeVec,
    peer_rtt: GaugeVec,
    pub(crate) connections: IntGauge,
    pub(crate) connections_refused: IntCounter,
    pub(crate) connections_idle_closed: IntCounter,
    pub(crate) busy: IntCounter,
    requests: Vec<IntCounter>,
    request_seconds: Vec<Histogram>,
    loop_pass_seconds: Histogram,
    loop_longest_pass: Gauge,
    tick_lateness_seconds: Histogram,
    published: Mutex<Published>,
}

/// What the gauges were last set from (counters only move by deltas).
#[derive(Default)]
struct Published {
    counters: ReplicaCounters,
    raft: RaftGauges,
    lag_peers: Vec<String>,
}

const ROLES: [&str; 3] = ["follower", "candidate", "leader"];

fn buckets(start: f64, factor: f64, count: usize) -> Vec<f64> {
    prometheus::exponential_buckets(start, factor, count).unwrap_or_default()
}

impl Metrics {
    /// A fresh set of metrics for the node whose data lives in `data_dir`.
    pub fn new(data_dir: PathBuf) -> Result<Arc<Metrics>, prometheus::Error> {
        let registry = Registry::new_custom(Some("titanstore".into()), None)?;
        let reg = |c: Box<dyn prometheus::core::Collector>| registry.register(c);
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            reg(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            reg(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram =
            |name: &str, help: &str, b: Vec<f64>| -> Result<Histogram, prometheus::Error> {
                let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(b))?;
                reg(Box::new(h.clone()))?;
                Ok(h)
            };
        let role = IntGaugeVec::new(
            Opts::new("role", "1 for the role this node has now, 0 for the others"),
            &["role"],
        )?;
        reg(Box::new(role.clone()))?;
        let members = IntGaugeVec::new(
            Opts::new("members", "Members in this node's latest configuration"),
            &["kind"],
        )?;
        reg(Box::new(members.clone()))?;
        let proposals = IntCounterVec::new(
            Opts::new(
                "proposals_total",
                "Client writes proposed by this node, by how they were answered",
            ),
            &["outcome"],
        )?;
        reg(Box::new(proposals.clone()))?;
        let peer_lag = IntGaugeVec::new(
            Opts::new(
                "peer_replication_lag_entries",
                "Leader only: entries a peer is behind the leader's last index",
            ),
            &["peer"],
        )?;
        reg(Box::new(peer_lag.clone()))?;
        let peer_rtt = GaugeVec::new(
            Opts::new(
                "peer_round_trip_seconds",
                "Last measured AppendEntries round trip to a peer",
            ),
            &["peer"],
        )?;
        reg(Box::new(peer_rtt.clone()))?;
        let requests_vec = IntCounterVec::new(
            Opts::new("client_requests_total", "Client requests by command"),
            &["command"],
        )?;
        reg(Box::new(requests_vec.clone()))?;
        let request_seconds_vec = HistogramVec::new(
            HistogramOpts::new(
                "client_request_duration_seconds",
                "Time from a parsed request to its reply, by command",
            )
            .buckets(buckets(0.0001, 2.0, 17)),
            &["command"],
        )?;
        reg(Box::new(request_seconds_vec.clone()))?;
        let requests = COMMANDS
            .iter()
            .map(|c| requests_vec.with_label_values(&[*c]))
            .collect();
        let request_seconds = COMMANDS
            .iter()
            .map(|c| request_seconds_vec.with_label_values(&[*c]))
            .collect();
        let loop_longest_pass = Gauge::new(
            "event_loop_longest_pass_seconds",
            "Longest single pass of the event loop since the node started",
        )?;
        reg(Box::new(loop_longest_pass.clone()))?;
        let metrics = Metrics {
            role,
            term: gauge("term", "Current Raft term")?,
            commit: gauge("commit_index", "Highest log index known committed")?,
            applied: gauge("applied_index", "Highest log index applied to the store")?,
            last_index: gauge("last_index", "Last index in this node's log")?,
            snapshot_index: gauge("snapshot_index", "Index of the latest snapshot")?,
            log_cache_bytes: gauge(
                "log_cache_bytes",
                "Bytes of log entries held in memory (older ones are read back from the WAL)",
            )?,
            has_leader: gauge("has_leader", "1 when this node knows a leader")?,
            members,
            disk_full: gauge("disk_full", "1 while the disk refuses writes (ENOSPC)")?,
            leader_changes: counter("leader_changes_total", "Times the known leader changed")?,
            proposals,
            fsync_seconds: histogram(
                "wal_fsync_duration_seconds",
                "Duration of one WAL fdatasync",
                buckets(0.00005, 2.0, 16),
            )?,
            batch_entries: histogram(
                "wal_batch_entries",
                "Log entries made durable by one group-commit batch (one fsync)",
                buckets(1.0, 2.0, 14),
            )?,
            fsyncs: counter("wal_fsyncs_total", "WAL fdatasync calls")?,
            wal_bytes: gauge("wal_bytes", "Bytes in retained WAL segments")?,
            wal_segments: gauge("wal_segments", "Retained WAL segment files")?,
            snapshots: counter("snapshots_total", "Snapshots this node saved")?,
            snapshot_seconds: histogram(
                "snapshot_save_duration_seconds",
                "Time to write and fsync one snapshot",
                buckets(0.001, 2.0, 14),
            )?,
            snapshot_bytes: gauge("snapshot_bytes", "Size of the snapshot file")?,
            snapshot_received_bytes: counter(
                "snapshot_received_bytes_total",
                "Bytes of snapshot images received from leaders, as they arrive",
            )?,
            snapshot_resumes: counter(
                "snapshot_resumes_total",
                "Snapshot image sends that went on from where an earlier send broke off",
            )?,
            log_lines_dropped: counter(
                "log_lines_dropped_total",
                "Log lines dropped because stderr could not take them as fast as they came",
            )?,
            peer_lag,
            peer_rtt,
            connections: gauge("client_connections", "Open client connections")?,
            connections_refused: counter(
                "client_connections_refused_total",
                "Client connections refused at --max-connections",
            )?,
            connections_idle_closed: counter(
                "client_connections_idle_closed_total",
                "Client connections closed after --client-idle-timeout",
            )?,
            busy: counter(
                "client_busy_total",
                "Requests refused with ERR BUSY (buffered request bytes at their cap)",
            )?,
            requests,
            request_seconds,
            loop_pass_seconds: histogram(
                "event_loop_pass_duration_seconds",
                "Duration of one event-loop pass (inputs, decisions, effects)",
                buckets(0.00001, 2.0, 18),
            )?,
            loop_longest_pass,
            tick_lateness_seconds: histogram(
                "event_loop_tick_lateness_seconds",
                "How late the event loop's timer tick ran",
                buckets(0.0001, 2.0, 14),
            )?,
            published: Mutex::new(Published::default()),
            data_dir,
            registry,
        };
        for role in ROLES {
            metrics.role.with_label_values(&[role]).set(0);
        }
        Ok(Arc::new(metrics))
    }

    /// One client request of `command` (an index into [`COMMANDS`]) took `elapsed`.
    pub fn request_done(&self, command: usize, elapsed: Duration) {
        if let (Some(c), Some(h)) = (
            self.requests.get(command),
            self.request_seconds.get(command),
        ) {
            c.inc();
            h.observe(elapsed.as_secs_f64());
        }
    }

    /// One event-loop pass took `elapsed`.
    pub fn loop_pass(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        self.loop_pass_seconds.observe(secs);
        if secs > self.loop_longest_pass.get() {
            self.loop_longest_pass.set(secs);
        }
    }

    /// The event loop's timer fired `late` after it was due.
    pub fn tick_late(&self, late: Duration) {
        self.tick_lateness_seconds.observe(late.as_secs_f64());
    }

    /// A peer answered an AppendEntries after `rtt`.
    pub fn peer_round_trip(&self, peer: &str, rtt: Duration) {
        self.peer_rtt
            .with_label_values(&[peer])
            .set(rtt.as_secs_f64());
    }

    /// Publishes the Raft state, per-peer lag and the replica's totals.
    pub fn publish(&self, raft: RaftGauges, counters: ReplicaCounters, lags: &[(String, u64)]) {
        let Ok(mut last) = self.published.lock() else {
            return;
        };
        let delta = |now: u64, before: u64| now.saturating_sub(before);
        let c = &last.counters;
        self.proposals
            .with_label_values(&["committed"])
            .inc_by(delta(counters.committed, c.committed));
        self.proposals
            .with_label_values(&["dropped"])
            .inc_by(delta(counters.dropped, c.dropped));
        self.proposals
            .with_label_values(&["unknown"])
            .inc_by(delta(counters.unknown, c.unknown));
        self.proposals
            .with_label_values(&["nospace"])
            .inc_by(delta(counters.no_space, c.no_space));
        self.leader_changes
            .inc_by(delta(counters.leader_changes, c.leader_changes));
        if raft.role != last.raft.role {
            let name = role_name(raft.role);
            for role in ROLES {
                self.role
                    .with_label_values(&[role])
                    .set(i64::from(role == name));
            }
        }
        let set = |g: &IntGauge, v: u64| g.set(i64::try_from(v).unwrap_or(i64::MAX));
        set(&self.term, raft.term);
        set(&self.commit, raft.commit);
        set(&self.applied, raft.applied);
        set(&self.last_index, raft.last_index);
        set(&self.snapshot_index, raft.snapshot_index);
        set(&self.log_cache_bytes, raft.log_cache_bytes);
        self.has_leader.set(i64::from(raft.leader.is_some()));
        self.disk_full.set(i64::from(raft.disk_full));
        set(
            &self.members.with_label_values(&["voter"]),
            raft.voters as u64,
        );
        set(
            &self.members.with_label_values(&["learner"]),
            raft.learners as u64,
        );
        let peers: Vec<&str> = lags.iter().map(|(p, _)| p.as_str()).collect();
        if peers != last.lag_peers {
            // Only a leader has lags; a peer that left must not keep its last value.
            self.peer_lag.reset();
            last.lag_peers = peers.iter().map(|p| p.to_string()).collect();
        }
        for (peer, lag) in lags {
            set(&self.peer_lag.with_label_values(&[peer]), *lag);
        }
        last.counters = counters;
        last.raft = raft;
    }

    /// `GET /health`: healthy when this node knows a leader and has applied
    /// everything it knows committed. The reason is a one-line JSON body.
    pub fn health(&self) -> (bool, String) {
        let raft = match self.published.lock() {
            Ok(last) => last.raft.clone(),
            Err(_) => {
                let body =
                    serde_json::json!({ "healthy": false, "reason": "metrics state unavailable" });
                return (false, body.to_string());
            }
        };
        let (ok, why) = if raft.refused {
            (
                false,
                "this node refuses to take part in the cluster".to_string(),
            )
        } else if raft.disk_full {
            (false, "the disk is full: writes are refused".to_string())
        } else if let Some(leader) = &raft.leader {
            if raft.applied >= raft.commit {
                (
                    true,
                    format!(
                        "leader {leader} known, applied {} of commit {}",
                        raft.applied, raft.commit
                    ),
                )
            } else {
                (
                    false,
                    format!(
                        "leader {leader} known, but applied {} is behind commit {}",
                        raft.applied, raft.commit
                    ),
                )
            }
        } else {
            (false, "no leader known".to_string())
        };
        let body = serde_json::json!({
            "healthy": ok,
            "reason": why,
            "leader": raft.leader,
            "commit": raft.commit,
            "applied": raft.applied,
        });
        (ok, body.to_string())
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        self.refresh_files();
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%err, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// WAL and snapshot sizes, read from the data dir.
    fn refresh_files(&self) {
        let wal = self.data_dir.join(crate::storage::WAL_DIR);
        let (mut bytes, mut segments) = (0u64, 0i64);
        if let Ok(dir) = std::fs::read_dir(&wal) {
            for entry in dir.flatten() {
                if entry.file_name().to_string_lossy().ends_with(".log") {
                    segments += 1;
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        self.wal_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.wal_segments.set(segments);
        let snapshot = std::fs::metadata(self.data_dir.join("snapshot.bin")).map_or(0, |m| m.len());
        self.snapshot_bytes
            .set(i64::try_from(snapshot).unwrap_or(i64::MAX));
        // The log writer counts for the whole process; only the new part is
        // added. Two renders at once must not both add it: the lock of the
        // published state orders them.
        if let Ok(_serialised) = self.published.lock() {
            let dropped = crate::logging::dropped_lines();
            let seen = self.log_lines_dropped.get();
            if dropped > seen {
                self.log_lines_dropped.inc_by(dropped - seen);
            }
        }
    }
}

fn role_name(role: Option<Role>) -> &'static str {
    match role {
        Some(Role::Leader) => "leader",
        Some(Role::Candidate | Role::PreCandidate) => "candidate",
        _ => "follower",
    }
}

/// Serves `GET /metrics` and `GET /health` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;

    let for_metrics = Arc::clone(&metrics);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&for_metrics);
                async move {
                    let body = tokio::task::spawn_blocking(move || metrics.render())
                        .await
                        .unwrap_or_default();
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let (ok, body) = metrics.health();
                let status = if ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move {
                    (
                        status,
                        [(header::CONTENT_TYPE, "application/json")],
                        format!("{body}\n"),
                    )
                        .into_response()
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
