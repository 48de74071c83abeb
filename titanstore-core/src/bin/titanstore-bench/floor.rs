//! `--floor`: the least a replicated write can cost on this machine. A write
//! that a client sees acknowledged has crossed the network twice on its
//! critical path (client to leader and back, leader to a follower and back)
//! and waited for one fdatasync (leader's and follower's run in parallel), so
//! its floor is 2 loopback round trips + 1 fdatasync of a small append.
//! Everything here is blocking std I/O, run before any runtime starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes appended before each fdatasync, about one small WAL entry.
pub const APPEND_BYTES: usize = 128;
pub const FSYNC_RUNS: usize = 1000;
pub const RTT_RUNS: usize = 5000;
/// Bytes each way in one round trip.
const PING_BYTES: usize = 16;
/// Untimed iterations first (file creation, connection and cache warm-up).
const WARMUP: usize = 20;

pub struct Floor {
    pub fsync_p50: Duration,
    pub fsync_p99: Duration,
    pub rtt_p50: Duration,
    pub rtt_p99: Duration,
}

impl Floor {
    /// 2 round trips + 1 fdatasync, from the medians.
    pub fn replicated_write(&self) -> Duration {
        2 * self.rtt_p50 + self.fsync_p50
    }
}

/// Measures in `dir` (which must exist): its filesystem is the one timed.
pub fn measure(dir: &Path) -> io::Result<Floor> {
    let mut fsyncs = fdatasync_times(dir)?;
    let mut rtts = loopback_round_trips()?;
    fsyncs.sort_unstable();
    rtts.sort_unstable();
    Ok(Floor {
        fsync_p50: quantile(&fsyncs, 0.5),
        fsync_p99: quantile(&fsyncs, 0.99),
        rtt_p50: quantile(&rtts, 0.5),
        rtt_p99: quantile(&rtts, 0.99),
    })
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let last = sorted.len().saturating_sub(1);
    let at = ((last as f64) * q).round() as usize;
    sorted.get(at.min(last)).copied().unwrap_or_default()
}

/// The scratch file, removed however the measurement ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn fdatasync_times(dir: &Path) -> io::Result<Vec<Duration>> {
    let path = dir.join(format!(".titanstore-bench-floor-{}", std::process::id()));
    let mut file: File = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&path)
        .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", path.display())))?;
    let _scratch = Scratch(path);
    let entry = [b'x'; APPEND_BYTES];
    let mut times = Vec::with_capacity(FSYNC_RUNS);
    for i in 0..WARMUP + FSYNC_RUNS {
        let start = Instant::now();
        file.write_all(&entry)?;
        file.sync_data()?;
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    Ok(times)
}

fn loopback_round_trips() -> io::Result<Vec<Duration>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut ping = [0; PING_BYTES];
        // Until the other side closes.
        while stream.read_exact(&mut ping).is_ok() {
            stream.write_all(&ping)?;
        }
        Ok(())
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut ping = [0u8; PING_BYTES];
    let mut times = Vec::with_capacity(RTT_RUNS);
    for i in 0..WARMUP + RTT_RUNS {
        let start = Instant::now();
        stream.write_all(&ping)?;
        stream.read_exact(&mut ping)?;
        if i >= WARMUP {
            times.push(start.elapsed());
        }
    }
    drop(stream);
    echo.join()
        .map_err(|_| io::Error::other("the echo thread panicked"))??;
    Ok(times)
}
