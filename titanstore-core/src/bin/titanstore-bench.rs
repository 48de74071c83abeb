//! Load generator for a running TitanStore cluster: N client connections,
//! each sending `--pipeline` requests at a time, for `--duration` seconds.
//! Prints throughput and latency percentiles (per request; a pipelined
//! request's latency is that of its batch), recorded in an HDR histogram
//! per client (1 µs to 60 s, 3 significant digits), so a long run costs no
//! memory per request. A progress line goes to stderr when it is a terminal.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Parser)]
#[command(
    name = "titanstore-bench",
    about = "Load generator for a TitanStore cluster"
)]
struct Args {
    /// Client address of the node to load (the leader, for writes).
    #[arg(long, default_value = "127.0.0.1:6001")]
    addr: String,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Requests each client sends before reading the replies.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Seconds to run (after a one-second warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Fraction of requests that are (linearizable) GETs; the rest are SETs.
    #[arg(long, default_value_t = 0.0)]
    read_ratio: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Reads are `SGET` (served from the node's own state, may be stale)
    /// instead of linearizable `GET`s.
    #[arg(long)]
    stale_reads: bool,
    /// Print one JSON object instead of the report.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print one machine-readable line instead of the report.
    #[arg(long)]
    csv: bool,
    /// Send every write as an exactly-once `REQ <client> <seq> SET ...`, as
    /// the bundled clients do.
    #[arg(long)]
    req: bool,
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

async fn client(
    args: &Args,
    id: usize,
    start: Instant,
    end: Instant,
    done: Arc<AtomicU64>,
) -> std::io::Result<ClientStats> {
    let stream = TcpStream::connect(&args.addr).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let value = "x".repeat(args.value_size);
    let mut rng = (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let read_cut = (args.read_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    let mut stats = ClientStats {
        ops: 0,
        errors: 0,
        latencies_us: histogram(),
    };
    let get = if args.stale_reads { "SGET" } else { "GET" };
    let mut batch = Vec::new();
    let mut line = String::new();
    let session = format!("bench{}-{id}", std::process::id());
    let mut seq: u64 = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        batch.clear();
        for _ in 0..args.pipeline {
            let key = next() % args.keys;
            if next() < read_cut {
                batch.extend_from_slice(format!("{get} k{key}\n").as_bytes());
            } else {
                if args.req {
                    seq += 1;
                    batch.extend_from_slice(
                        format!("REQ {session} {seq} SET k{key} {value}\n").as_bytes(),
                    );
                } else {
                    batch.extend_from_slice(format!("SET k{key} {value}\n").as_bytes());
                }
            }
        }
        write.write_all(&batch).await?;
        let mut errors = 0;
        for _ in 0..args.pipeline {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            if line.starts_with("ERR") {
                errors += 1;
            }
        }
        if now >= start {
            let us = (now.elapsed().as_micros() as u64).clamp(1, 60_000_000);
            stats.ops += args.pipeline as u64;
            stats.errors += errors;
            stats
                .latencies_us
                .saturating_record_n(us, args.pipeline as u64);
            done.fetch_add(args.pipeline as u64, Ordering::Relaxed);
        }
    }
    Ok(stats)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let bad = if args.clients == 0 || args.pipeline == 0 || args.keys == 0 {
        Some("--clients, --pipeline and --keys must be at least 1")
    } else if !(args.duration > 0.0 && args.duration.is_finite()) {
        Some("--duration must be a positive number of seconds")
    } else if !(0.0..=1.0).contains(&args.read_ratio) {
        Some("--read-ratio must be between 0 and 1")
    } else {
        None
    };
    if let Some(why) = bad {
        eprintln!("titanstore-bench: {why}");
        std::process::exit(2);
    }
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs_f64(args.duration);
    let args = Arc::new(args);
    let done = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..args.clients)
        .map(|id| {
            let args = Arc::clone(&args);
            let done = Arc::clone(&done);
            tokio::spawn(async move { client(&args, id, start, end, done).await })
        })
        .collect();
    if std::io::stderr().is_terminal() {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = done.load(Ordering::Relaxed);
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
                    std::process::exit(1);
                }
            }
            Ok(Err(err)) => {
                eprintln!("client failed: {err}");
                std::process::exit(1);
            }
            Err(err) => {
                eprintln!("client panicked: {err}");
                std::process::exit(1);
            }
        }
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let rate = ops as f64 / args.duration;
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p99, p999, max) = (
        ms(0.5),
        ms(0.99),
        ms(0.999),
        latencies.max() as f64 / 1000.0,
    );
    if args.json {
        let report = serde_json::json!({
            "clients": args.clients,
            "pipeline": args.pipeline,
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
            "{} clients x pipeline {}, {:.0}% {}reads: {rate:.0} ops/s, p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, max {max:.3} ms, {errors} errors",
            args.clients,
            args.pipeline,
            args.read_ratio * 100.0,
            if args.stale_reads { "stale " } else { "" },
        );
    }
}
