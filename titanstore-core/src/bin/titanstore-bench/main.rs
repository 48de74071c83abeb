//! Load generator for a running TitanStore cluster, or for an etcd cluster
//! through its v3 JSON gateway (`--target etcd`) with the same load and the
//! same report: N clients, each keeping `--pipeline` requests in flight, for
//! `--duration` seconds. Prints throughput and latency percentiles (per
//! request; a pipelined request's latency is that of its batch), recorded in
//! an HDR histogram per connection (1 µs to 60 s, 3 significant digits), so a
//! long run costs no memory per request. A progress line goes to stderr when
//! it is a terminal. `--floor` instead measures what the machine allows a
//! replicated write at best (see `floor.rs`).
//!
//! The wire protocols live in `titan.rs` and `etcd.rs`; this file owns the
//! arguments, the connection loop and the report.

mod etcd;
mod floor;
mod titan;

use std::future::Future;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// TitanStore's line protocol (`SET`, `GET`, `SGET`).
    Titanstore,
    /// etcd's v3 JSON gateway over HTTP/1.1 (`/v3/kv/put`, `/v3/kv/range`).
    Etcd,
}

#[derive(Debug, Parser)]
#[command(
    name = "titanstore-bench",
    about = "Load generator for a TitanStore cluster (or, for comparison, an etcd cluster)"
)]
struct Args {
    /// What the addresses are.
    #[arg(long, value_enum, default_value = "titanstore")]
    target: Target,
    /// Client address of the node to load (the leader, for TitanStore
    /// writes). Default 127.0.0.1:6001, or 127.0.0.1:2379 with --target etcd.
    #[arg(long, conflicts_with = "addrs")]
    addr: Option<String>,
    /// Comma-separated addresses; clients are spread over them round-robin
    /// (etcd members forward writes to their leader; TitanStore followers
    /// answer writes with a redirect, counted as errors).
    #[arg(long, value_delimiter = ',')]
    addrs: Vec<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests each client keeps in flight. TitanStore: sent back to back
    /// on the client's one connection, then the replies are read. etcd: its
    /// gateway (Go's HTTP/1.1 server) answers pipelined requests on a
    /// connection strictly one after another, so each client opens this many
    /// keep-alive connections with one request in flight on each (use
    /// --http-pipelining to pipeline on one connection instead).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// With --target etcd: one connection per client with --pipeline
    /// requests pipelined on it (HTTP/1.1 pipelining) instead of --pipeline
    /// connections.
    #[arg(long)]
    http_pipelining: bool,
    /// Seconds to run (after a one-second warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Fraction of requests that are (linearizable) reads; the rest are writes.
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Reads may be stale: `SGET` (served from the node's own state) instead
    /// of linearizable `GET`s; for etcd, `"serializable": true` ranges.
    #[arg(long)]
    stale_reads: bool,
    /// Print one JSON object instead of the report.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print one machine-readable line instead of the report:
    /// ops/s,p50,p99,p99.9,errors (ms); with --floor,
    /// fsync p50,fsync p99,rtt p50,rtt p99,floor (ms).
    #[arg(long)]
    csv: bool,
    /// Send every write as an exactly-once `REQ <client> <seq> SET ...`, as
    /// the bundled clients do (TitanStore only).
    #[arg(long)]
    req: bool,
    /// Generate no load: measure this machine's floor for a replicated write
    /// instead, 2 loopback TCP round trips + 1 fdatasync of a small append
    /// (medians of 5000 round trips and 1000 fdatasyncs). Load options are
    /// ignored.
    #[arg(long)]
    floor: bool,
    /// With --floor: a directory on the filesystem to time fdatasync on
    /// (e.g. the nodes' data dir). Default: the current directory.
    #[arg(long, requires = "floor")]
    data_dir: Option<PathBuf>,
}

/// One side of a wire protocol: requests out, replies in.
trait Protocol {
    /// Appends one request for `key` (a read or a write) to `out`.
    fn encode(&mut self, out: &mut Vec<u8>, key: u64, read: bool);
    /// Reads one reply; `Ok(true)` if it reports an error.
    fn read_reply<R: AsyncBufRead + Unpin + Send>(
        &mut self,
        input: &mut R,
    ) -> impl Future<Output = io::Result<bool>> + Send;
}

struct ClientStats {
    ops: u64,
    errors: u64,
    latencies_us: Histogram<u64>,
}

fn histogram() -> Histogram<u64> {
    // Bounds and precision are constants that are always valid.
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())
}

/// What every connection shares.
struct Load {
    keys: u64,
    read_cut: u64,
    start: Instant,
    end: Instant,
    done: AtomicU64,
}

/// One connection with `depth` requests in flight, until `load.end`.
async fn connection<P: Protocol>(
    mut protocol: P,
    addr: String,
    depth: usize,
    seed: u64,
    load: Arc<Load>,
) -> io::Result<ClientStats> {
    let with_addr = |err: io::Error| io::Error::new(err.kind(), format!("{addr}: {err}"));
    let stream = TcpStream::connect(&addr).await.map_err(with_addr)?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut rng = (seed + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut stats = ClientStats {
        ops: 0,
        errors: 0,
        latencies_us: histogram(),
    };
    let mut batch = Vec::new();
    loop {
        let now = Instant::now();
        if now >= load.end {
            break;
        }
        batch.clear();
        for _ in 0..depth {
            let key = next() % load.keys;
            protocol.encode(&mut batch, key, next() < load.read_cut);
        }
        write.write_all(&batch).await.map_err(with_addr)?;
        let mut errors = 0;
        for _ in 0..depth {
            if protocol.read_reply(&mut read).await.map_err(with_addr)? {
                errors += 1;
            }
        }
        if now >= load.start {
            let us = (now.elapsed().as_micros() as u64).clamp(1, 60_000_000);
            stats.ops += depth as u64;
            stats.errors += errors;
            stats.latencies_us.saturating_record_n(us, depth as u64);
            load.done.fetch_add(depth as u64, Ordering::Relaxed);
        }
    }
    Ok(stats)
}

fn refusal(args: &Args) -> Option<&'static str> {
    if args.clients == 0 || args.pipeline == 0 || args.keys == 0 {
        Some("--clients, --pipeline and --keys must be at least 1")
    } else if !(args.duration > 0.0 && args.duration.is_finite()) {
        Some("--duration must be a positive number of seconds")
    } else if !(0.0..=1.0).contains(&args.read_ratio) {
        Some("--read-ratio must be between 0 and 1")
    } else if args.addrs.iter().any(|addr| addr.trim().is_empty()) {
        Some("--addrs has an empty address")
    } else if args.target == Target::Etcd && args.req {
        Some("--req is TitanStore's exactly-once protocol; etcd has no equivalent")
    } else if args.target != Target::Etcd && args.http_pipelining {
        Some("--http-pipelining is for --target etcd")
    } else {
        None
    }
}

fn main() {
    let args = Args::parse();
    if args.floor {
        std::process::exit(floor_report(&args));
    }
    if let Some(why) = refusal(&args) {
        eprintln!("titanstore-bench: {why}");
        std::process::exit(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("titanstore-bench: cannot start the runtime: {err}");
            std::process::exit(1);
        }
    };
    std::process::exit(runtime.block_on(run(args)));
}

fn floor_report(args: &Args) -> i32 {
    let dir = args.data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
    if !dir.is_dir() {
        eprintln!(
            "titanstore-bench: --data-dir {}: not a directory",
            dir.display()
        );
        return 2;
    }
    let floor = match floor::measure(&dir) {
        Ok(floor) => floor,
        Err(err) => {
            eprintln!("titanstore-bench: cannot measure the floor: {err}");
            return 1;
        }
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (fsync_p50, fsync_p99) = (ms(floor.fsync_p50), ms(floor.fsync_p99));
    let (rtt_p50, rtt_p99) = (ms(floor.rtt_p50), ms(floor.rtt_p99));
    let write = ms(floor.replicated_write());
    if args.json {
        let report = serde_json::json!({
            "dir": dir.display().to_string(),
            "append_bytes": floor::APPEND_BYTES,
            "fsync_runs": floor::FSYNC_RUNS,
            "rtt_runs": floor::RTT_RUNS,
            "fdatasync_p50_ms": fsync_p50,
            "fdatasync_p99_ms": fsync_p99,
            "rtt_p50_ms": rtt_p50,
            "rtt_p99_ms": rtt_p99,
            "replicated_write_floor_ms": write,
        });
        println!("{report}");
    } else if args.csv {
        println!("{fsync_p50:.4},{fsync_p99:.4},{rtt_p50:.4},{rtt_p99:.4},{write:.4}");
    } else {
        println!(
            "fdatasync of a {} B append in {}: p50 {fsync_p50:.3} ms, p99 {fsync_p99:.3} ms ({} runs)",
            floor::APPEND_BYTES,
            dir.display(),
            floor::FSYNC_RUNS
        );
        println!(
            "loopback TCP round trip: p50 {rtt_p50:.4} ms, p99 {rtt_p99:.4} ms ({} runs)",
            floor::RTT_RUNS
        );
        println!("floor of a replicated write (2 round trips + 1 fdatasync): {write:.3} ms");
    }
    0
}

async fn run(args: Args) -> i32 {
    // Many connections (etcd: clients x pipeline) need many descriptors; if
    // the limit cannot be raised, connecting says so.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let addrs = match (&args.addr, args.addrs.is_empty()) {
        (Some(addr), _) => vec![addr.clone()],
        (None, false) => args.addrs.iter().map(|a| a.trim().to_owned()).collect(),
        (None, true) => vec![match args.target {
            Target::Titanstore => "127.0.0.1:6001".to_owned(),
            Target::Etcd => "127.0.0.1:2379".to_owned(),
        }],
    };
    // (connections per client, requests in flight on each)
    let (per_client, depth) = match args.target {
        Target::Etcd if !args.http_pipelining => (args.pipeline, 1),
        _ => (1, args.pipeline),
    };
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + warmup;
    let load = Arc::new(Load {
        keys: args.keys,
        read_cut: (args.read_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
        start,
        end: start + Duration::from_secs_f64(args.duration),
        done: AtomicU64::new(0),
    });
    let mut tasks = Vec::with_capacity(args.clients * per_client);
    for client in 0..args.clients {
        let addr = &addrs[client % addrs.len()];
        for n in 0..per_client {
            let id = client * per_client + n;
            let (addr, load) = (addr.clone(), Arc::clone(&load));
            tasks.push(match args.target {
                Target::Titanstore => {
                    let protocol =
                        titan::TitanStore::new(args.value_size, args.stale_reads, args.req, id);
                    tokio::spawn(connection(protocol, addr, depth, id as u64, load))
                }
                Target::Etcd => {
                    let protocol = etcd::EtcdGateway::new(&addr, args.value_size, args.stale_reads);
                    tokio::spawn(connection(protocol, addr, depth, id as u64, load))
                }
            });
        }
    }
    if std::io::stderr().is_terminal() {
        let load = Arc::clone(&load);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = load.done.load(Ordering::Relaxed);
                let elapsed = Instant::now()
                    .saturating_duration_since(start)
                    .as_secs_f64();
                eprint!("\r{elapsed:5.1} s  {now} ops  {} ops/s   ", now - last);
                last = now;
            }
        });
    }
    let mut ops = 0;
    let mut errors = 0;
    let mut latencies = histogram();
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => {
                ops += stats.ops;
                errors += stats.errors;
                if let Err(err) = latencies.add(&stats.latencies_us) {
                    eprintln!("cannot merge latencies: {err}");
                    return 1;
                }
            }
            Ok(Err(err)) => {
                eprintln!("client failed: {err}");
                return 1;
            }
            Err(err) => {
                eprintln!("client panicked: {err}");
                return 1;
            }
        }
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    report(&args, ops, errors, &latencies, per_client);
    0
}

fn report(args: &Args, ops: u64, errors: u64, latencies: &Histogram<u64>, per_client: usize) {
    let rate = ops as f64 / args.duration;
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latencies.max() as f64 / 1000.0,
    );
    let target = match args.target {
        Target::Titanstore => "titanstore",
        Target::Etcd => "etcd",
    };
    if args.json {
        let report = serde_json::json!({
            "target": target,
            "clients": args.clients,
            "pipeline": args.pipeline,
            "connections": args.clients * per_client,
            "read_ratio": args.read_ratio,
            "stale_reads": args.stale_reads,
            "req": args.req,
            "value_size": args.value_size,
            "keys": args.keys,
            "duration_s": args.duration,
            "ops": ops,
            "ops_per_sec": rate.round(),
            "p50_ms": p50,
            "p99_ms": p99,
            "p999_ms": p999,
            "max_ms": max,
            "errors": errors,
        });
        println!("{report}");
    } else if args.csv {
        println!("{rate:.0},{p50:.3},{p99:.3},{p999:.3},{errors}");
    } else {
        println!(
            "{}{} clients x pipeline {}, {:.0}% {}reads: {rate:.0} ops/s, p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms, {errors} errors",
            if args.target == Target::Etcd {
                "etcd: "
            } else {
                ""
            },
            args.clients,
            args.pipeline,
            args.read_ratio * 100.0,
            if args.stale_reads { "stale " } else { "" },
        );
    }
}
