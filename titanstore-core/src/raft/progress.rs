//! What a leader knows about one follower's log: match/next indexes and the
//! flow-control state (probe, pipelined replicate, waiting for a snapshot).
//!
//! Pure bookkeeping: it decides nothing about commits and sends nothing.

use std::collections::VecDeque;

use crate::types::LogIndex;

/// How the leader currently feeds a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressState {
    /// Where the follower's log matches is unknown: one AppendEntries at a time.
    Probe,
    /// The follower matches: AppendEntries are pipelined up to a window.
    Replicate,
    /// An InstallSnapshot up to `pending` is on its way.
    Snapshot { pending: LogIndex },
}

#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// Highest index known durable on the follower and matching our log.
    pub(crate) matched: LogIndex,
    /// Next index to send.
    pub(crate) next: LogIndex,
    pub(crate) state: ProgressState,
    /// Probe: a message is outstanding; wait for a reply or a heartbeat.
    pub(crate) paused: bool,
    /// Replicate: last index of each AppendEntries in flight.
    pub(crate) inflights: VecDeque<LogIndex>,
    /// Heard from the follower since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Ticks without progress while entries are outstanding (lost messages).
    pub(crate) stall_ticks: u64,
    /// Entries from this index on are being read back from storage for
    /// this follower (they left the leader's memory); one read at a time.
    pub(crate) reading: Option<LogIndex>,
}

impl Progress {
    pub(crate) fn new(next: LogIndex) -> Self {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            paused: false,
            inflights: VecDeque::new(),
            recent_active: true,
            stall_ticks: 0,
            reading: None,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        if let ProgressState::Snapshot { pending } = self.state {
            self.next = (self.matched + 1).max(pending + 1);
        } else {
            self.next = self.matched + 1;
        }
        self.state = ProgressState::Probe;
        self.paused = false;
        self.inflights.clear();
        self.stall_ticks = 0;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next = self.matched + 1;
        self.paused = false;
        self.inflights.clear();
        self.stall_ticks = 0;
    }

    pub(crate) fn become_snapshot(&mut self, pending: LogIndex) {
        self.state = ProgressState::Snapshot { pending };
        self.paused = false;
        self.inflights.clear();
        self.stall_ticks = 0;
    }

    /// Records a successful reply up to `index`. Returns whether `matched` grew.
    pub(crate) fn maybe_update(&mut self, index: LogIndex) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.stall_ticks = 0;
            while self.inflights.front().is_some_and(|&i| i <= index) {
                self.inflights.pop_front();
            }
        }
        self.next = self.next.max(index + 1);
        self.paused = false;
        updated
    }

    /// A rejection: retry from `next` (already clamped by the caller).
    pub(crate) fn on_reject(&mut self, next: LogIndex) {
        self.state = ProgressState::Probe;
        self.next = next.max(self.matched + 1);
        self.paused = false;
        self.inflights.clear();
        self.stall_ticks = 0;
    }

    /// Whether a rejection of the AppendEntries anchored at `rejected` is
    /// stale: in replicate state, anything at or below what already matched;
    /// while probing, anything but the probe in flight (`next - 1`).
    pub(crate) fn is_stale_rejection(&self, rejected: LogIndex) -> bool {
        match self.state {
            ProgressState::Replicate => rejected <= self.matched,
            ProgressState::Probe => rejected != self.next.saturating_sub(1),
            ProgressState::Snapshot { .. } => false,
        }
    }

    /// Whether no AppendEntries may be sent now.
    pub(crate) fn is_paused(&self, max_inflight: usize) -> bool {
        match self.state {
            ProgressState::Probe => self.paused,
            ProgressState::Replicate => self.inflights.len() >= max_inflight.max(1),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// An AppendEntries whose last entry is `last` (None: empty) was sent.
    pub(crate) fn on_sent(&mut self, last: Option<LogIndex>) {
        match self.state {
            ProgressState::Probe => self.paused = true,
            ProgressState::Replicate => {
                if let Some(last) = last {
                    self.next = last + 1;
                    self.inflights.push_back(last);
                }
            }
            ProgressState::Snapshot { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_fills_and_drains() {
        let mut pr = Progress::new(1);
        pr.become_replicate();
        pr.on_sent(Some(3));
        pr.on_sent(Some(5));
        assert!(pr.is_paused(2));
        assert!(pr.maybe_update(3));
        assert!(!pr.is_paused(2));
        assert_eq!(pr.next, 6);
        pr.on_reject(2);
        assert_eq!(pr.state, ProgressState::Probe);
        assert_eq!(pr.next, 4, "never below matched + 1");
    }

    #[test]
    fn probe_pauses_after_one_message() {
        let mut pr = Progress::new(7);
        assert!(!pr.is_paused(8));
        pr.on_sent(None);
        assert!(pr.is_paused(8));
        pr.maybe_update(0);
        assert!(!pr.is_paused(8));
    }
}
