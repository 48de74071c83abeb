//! Where a long event-loop pass spent its time, from the kernel's scheduler
//! statistics of the event loop's own thread (`/proc/thread-self/schedstat`,
//! Linux only): time on a core, time runnable but waiting for one, and the
//! rest, blocked (I/O, a lock, a page fault).
//!
//! Reading the file costs a system call, so the baseline is refreshed at most
//! once a millisecond: a long pass's figures may include up to a millisecond
//! before it began. The kernel adds a running thread's time at scheduler
//! ticks, so the figures are good to a tick (a few milliseconds).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How old a baseline may be before a pass reads a new one.
const REFRESH: Duration = Duration::from_millis(1);

/// Scheduler figures of one thread, in nanoseconds since it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    on_cpu: u64,
    waiting: u64,
}

impl Sample {
    /// `"<on cpu ns> <run-queue wait ns> <slices>"`.
    fn parse(text: &str) -> Option<Sample> {
        let mut fields = text.split_ascii_whitespace();
        let on_cpu = fields.next()?.parse().ok()?;
        let waiting = fields.next()?.parse().ok()?;
        Some(Sample { on_cpu, waiting })
    }
}

/// How one long pass divided its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PassTimes {
    /// Running on a core.
    pub(super) on_cpu: Duration,
    /// Runnable, waiting for a core.
    pub(super) waiting_for_cpu: Duration,
}

/// The event-loop thread's scheduler statistics; inert where there are none.
pub(super) struct ThreadSched {
    file: Option<File>,
    baseline: Option<(Instant, Sample)>,
}

impl ThreadSched {
    /// Opens the calling thread's statistics: call it on the event-loop thread.
    pub(super) fn for_this_thread() -> ThreadSched {
        ThreadSched {
            file: File::open("/proc/thread-self/schedstat").ok(),
            baseline: None,
        }
    }

    fn read(&self) -> Option<Sample> {
        let file = self.file.as_ref()?;
        let mut buf = [0u8; 96];
        let n = file.read_at(&mut buf, 0).ok()?;
        Sample::parse(std::str::from_utf8(buf.get(..n)?).ok()?)
    }

    /// A pass begins at `now`.
    pub(super) fn pass_started(&mut self, now: Instant) {
        if self.file.is_none() {
            return;
        }
        let fresh = self
            .baseline
            .is_some_and(|(at, _)| now.saturating_duration_since(at) < REFRESH);
        if !fresh && let Some(sample) = self.read() {
            self.baseline = Some((now, sample));
        }
    }

    /// The times since the baseline, asked for at the end of a long pass.
    pub(super) fn since_pass_started(&mut self) -> Option<PassTimes> {
        let (_, before) = self.baseline?;
        let now = self.read()?;
        self.baseline = None;
        Some(between(before, now))
    }
}

fn between(before: Sample, after: Sample) -> PassTimes {
    PassTimes {
        on_cpu: Duration::from_nanos(after.on_cpu.saturating_sub(before.on_cpu)),
        waiting_for_cpu: Duration::from_nanos(after.waiting.saturating_sub(before.waiting)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn schedstat_lines_are_read_and_subtracted() {
        let before = Sample::parse("1000000 250000 7\n").unwrap();
        let after = Sample::parse("3000000 20250000 9\n").unwrap();
        assert_eq!(
            between(before, after),
            PassTimes {
                on_cpu: Duration::from_millis(2),
                waiting_for_cpu: Duration::from_millis(20),
            }
        );
        assert_eq!(Sample::parse("garbage"), None);
        assert_eq!(Sample::parse(""), None);
    }

    #[test]
    fn a_busy_thread_is_seen_on_a_core() {
        let mut sched = ThreadSched::for_this_thread();
        if sched.file.is_none() {
            return; // not Linux, or no schedstat: the figures are left out
        }
        sched.pass_started(Instant::now());
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let times = sched.since_pass_started().unwrap();
        // The kernel adds a running thread's time at scheduler ticks, so the
        // figures trail the clock by up to a tick (10 ms at HZ=100).
        assert!(
            times.on_cpu + times.waiting_for_cpu >= Duration::from_millis(80),
            "{times:?}"
        );
        // The baseline is used up: a second ask has nothing to compare with.
        assert_eq!(sched.since_pass_started(), None);
    }
}
