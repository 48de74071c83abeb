//! Log output that never holds up the node.
//!
//! Lines are formatted where they are logged and handed to one writer thread
//! through a bounded queue; that thread writes them to stderr. A stderr that
//! blocks (a pipe nobody reads, a log file on a disk stalled by writeback)
//! then stalls only the writer thread: when its queue is full, further lines
//! are dropped and counted, and the event loop goes on ticking and answering.

use std::sync::{Mutex, OnceLock};

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::cli::LogFormat;

/// Log lines queued for the writer thread at most; beyond it lines are dropped.
const QUEUED_LINES: usize = 64 * 1024;

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();
/// Dropping it makes the writer thread write out what is queued and stop.
static FLUSH: Mutex<Option<WorkerGuard>> = Mutex::new(None);

/// Installs the process's log subscriber, filtered by `RUST_LOG` or else by
/// `default_filter`. A second call (two nodes in one Python process) keeps
/// the first subscriber and its writer thread.
pub fn init(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("titanstore-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.with_ansi(ansi).try_init(),
    };
    if installed.is_ok() {
        let _ = DROPPED.set(dropped);
        if let Ok(mut slot) = FLUSH.lock() {
            *slot = Some(guard);
        }
    }
}

/// Writes out the queued lines and stops the writer thread: for a process
/// about to exit (later lines are dropped and counted).
pub fn finish() {
    let guard = FLUSH.lock().ok().and_then(|mut slot| slot.take());
    drop(guard);
}

/// Log lines dropped so far because the writer thread could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}
