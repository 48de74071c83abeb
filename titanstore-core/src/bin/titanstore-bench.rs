//! Load generator for a running TitanStore cluster: N client connections,
//! each sending `--pipeline` requests at a time, for `--duration` seconds.
//! Prints throughput and latency percentiles (per request; a pipelined
//! request's latency is that of its batch).

use std::time::{Duration, Instant};

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
    latencies_us: Vec<u32>,
}

async fn client(
    args: &Args,
    id: usize,
    start: Instant,
    end: Instant,
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
        latencies_us: Vec::new(),
    };
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
                batch.extend_from_slice(format!("GET k{key}\n").as_bytes());
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
            let us = now.elapsed().as_micros().min(u32::MAX as u128) as u32;
            stats.ops += args.pipeline as u64;
            stats.errors += errors;
            for _ in 0..args.pipeline {
                stats.latencies_us.push(us);
            }
        }
    }
    Ok(stats)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    f64::from(sorted[rank.min(sorted.len() - 1)]) / 1000.0
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs_f64(args.duration);
    let args = std::sync::Arc::new(args);
    let tasks: Vec<_> = (0..args.clients)
        .map(|id| {
            let args = std::sync::Arc::clone(&args);
            tokio::spawn(async move { client(&args, id, start, end).await })
        })
        .collect();
    let mut ops = 0;
    let mut errors = 0;
    let mut latencies = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(stats)) => {
                ops += stats.ops;
                errors += stats.errors;
                latencies.extend(stats.latencies_us);
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
    latencies.sort_unstable();
    let rate = ops as f64 / args.duration;
    let (p50, p99, p999) = (
        percentile(&latencies, 50.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
    );
    if args.csv {
        println!("{rate:.0},{p50:.3},{p99:.3},{p999:.3},{errors}");
    } else {
        println!(
            "{} clients x pipeline {}, {:.0}% reads: {rate:.0} ops/s, p50 {p50:.3} ms, p99 {p99:.3} ms, p99.9 {p999:.3} ms, {errors} errors",
            args.clients,
            args.pipeline,
            args.read_ratio * 100.0
        );
    }
}
