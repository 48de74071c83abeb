//! Watches that the Raft core's tick count keeps up with real time.
//!
//! The core measures a leader's read lease in ticks (`raft/lease.rs`). The
//! event loop's ticker delays ticks after a stalled pass instead of firing
//! them in a burst, so after a stall the core's count lags real time and a
//! lease counted in ticks would outlast its real length. [`TickClock`] says
//! when the count lags by more than a quarter tick beyond one tick (or the
//! pass started with no tick since the last such finding); the loop then
//! drops the lease, and only a heartbeat round sent later starts a new one.
//! Elections are not touched: a follower whose ticks lag only waits longer.

use std::time::{Duration, Instant};

pub(super) struct TickClock {
    tick: Duration,
    /// When the count was last restarted (at a tick), if it was.
    anchor: Option<Instant>,
    /// Ticks delivered since `anchor`.
    count: u32,
}

impl TickClock {
    pub(super) fn new(tick: Duration) -> TickClock {
        TickClock {
            tick,
            anchor: None,
            count: 0,
        }
    }

    /// A tick is delivered to the core at `now`.
    pub(super) fn ticked(&mut self, now: Instant) {
        match self.anchor {
            Some(_) => self.count = self.count.saturating_add(1),
            None => {
                self.anchor = Some(now);
                self.count = 0;
            }
        }
    }

    /// Whether the core's count may lag real time too far for a lease at
    /// `now` (the start of a pass). Restarts the count at the next tick.
    pub(super) fn behind(&mut self, now: Instant) -> bool {
        let Some(anchor) = self.anchor else {
            return true;
        };
        let allowed = self.tick * (self.count.saturating_add(1)) + self.tick / 4;
        if now.saturating_duration_since(anchor) > allowed {
            self.anchor = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_time_ticks_keep_up_and_a_stall_is_caught_once() {
        let tick = Duration::from_millis(10);
        let t0 = Instant::now();
        let mut clock = TickClock::new(tick);
        assert!(clock.behind(t0), "no tick yet");
        clock.ticked(t0);
        for k in 1..=5u32 {
            clock.ticked(t0 + tick * k);
            assert!(!clock.behind(t0 + tick * k + Duration::from_millis(9)));
        }
        // Stalled: 30 ms with no tick.
        assert!(clock.behind(t0 + tick * 8));
        assert!(
            clock.behind(t0 + tick * 8),
            "until a tick restarts the count"
        );
        clock.ticked(t0 + tick * 9);
        assert!(!clock.behind(t0 + tick * 9 + Duration::from_millis(5)));
    }
}
