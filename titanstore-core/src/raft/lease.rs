//! The leader's read lease (`ReadMode::Lease`): while it holds one, a leader
//! answers a linearizable read at once with its commit index, without a
//! heartbeat round; outside it reads go through ReadIndex (`read_index.rs`).
//!
//! Why it is safe, given the assumption below:
//! - The lease starts when a heartbeat round that a majority of voters later
//!   acknowledged was *sent* (tick `s` of the leader), not when the acks
//!   arrived; every acknowledging follower received that round after `s`.
//! - A follower that heard from its leader refuses pre-votes and (with
//!   check-quorum, which lease mode requires) higher-term vote requests for
//!   `election_timeout_min_ticks` of its own ticks (`in_lease` in
//!   `election.rs`); a node that just started does the same, since it cannot
//!   remember whom it heard from before a crash. So no other leader can be
//!   elected before `s` + (min - 1) ticks of a follower's clock: a majority
//!   of the next leader's voters includes one of those followers.
//! - The leader serves for [`RaftConfig::lease_ticks`] of its own ticks after
//!   `s`: (min - 1) shortened by the drift bound, less two ticks (one for a
//!   tick counter that lags real time by up to a tick, one for the event
//!   loop pass in which the read is answered).
//! - A leadership transfer lets its target be elected inside any lease, so
//!   no lease reads while a transfer is under way, and none for the rest of
//!   the term once a `TimeoutNow` went out. A leader that steps down, or
//!   whose membership changes, loses its lease at once.
//!
//! Assumption (as etcd's and TiKV's lease reads make): every node's ticks
//! advance at the real rate within `lease_drift_percent`, and no node's
//! ticks stall beyond that margin. A runtime whose loop falls behind must
//! call [`RaftNode::drop_read_lease`]; the lease then restarts only from a
//! round sent afterwards.

use std::collections::VecDeque;

use super::node::RaftNode;
use super::ready::Role;
use super::{RaftConfig, ReadMode};

/// Rounds awaiting a majority kept for the lease at most (older ones are
/// forgotten, which only means they cannot start a lease).
const MAX_TRACKED_ROUNDS: usize = 1024;

#[derive(Debug, Default)]
pub(super) struct LeaseState {
    /// Leader: lease reads are served while the read clock is below this.
    until: u64,
    /// Rounds at or below this never start a lease: they were sent before
    /// the lease was dropped.
    floor: u64,
    /// (round, read-clock tick it was sent at) of this term's rounds no
    /// majority acknowledged yet, oldest first.
    sent: VecDeque<(u64, u64)>,
    /// A `TimeoutNow` went out this term: its target may be elected inside
    /// any lease, so none is trusted again in this term.
    revoked: bool,
}

impl RaftConfig {
    /// Ticks a lease lasts after its round was sent:
    /// `floor((election_timeout_min_ticks - 1) * (100 - drift) / 100) - 2`.
    pub fn lease_ticks(&self) -> u64 {
        let drift = self.lease_drift_percent.min(100);
        (self.election_timeout_min_ticks.saturating_sub(1) * (100 - drift) / 100).saturating_sub(2)
    }
}

impl RaftNode {
    /// Whether a linearizable read may be answered now with the commit index.
    pub(super) fn lease_valid(&self) -> bool {
        let lease = &self.reads.lease;
        self.cfg.read_mode == ReadMode::Lease
            && self.role == Role::Leader
            && self.transfer.is_none()
            && !lease.revoked
            && self.reads.ticks < lease.until
            && self.log.term(self.log.committed()) == Some(self.term)
    }

    /// Whether this leader holds a read lease now (lease mode only).
    pub fn has_read_lease(&self) -> bool {
        self.lease_valid()
    }

    /// The runtime's clock fell behind (its loop stalled, ticks were late):
    /// the lease, measured in ticks, may be longer than real time allows.
    /// Drops it; only a round sent after this call starts a new one.
    pub fn drop_read_lease(&mut self) {
        let lease = &mut self.reads.lease;
        if lease.until > self.reads.ticks {
            tracing::debug!(id = %self.id, "read lease dropped: clock fell behind");
        }
        lease.until = 0;
        lease.floor = self.reads.round;
        lease.sent.clear();
    }

    /// New term as leader, or leadership lost: no lease, nothing tracked.
    pub(super) fn lease_reset(&mut self) {
        self.reads.lease = LeaseState::default();
    }

    /// A `TimeoutNow` was sent: no lease reads for the rest of this term.
    pub(super) fn lease_revoke(&mut self) {
        self.reads.lease.revoked = true;
        self.reads.lease.until = 0;
    }

    /// Lease mode, leader: starts a new heartbeat round so that its acks
    /// renew the lease (the periodic heartbeat calls this before sending).
    pub(super) fn lease_heartbeat_round(&mut self) {
        if self.cfg.read_mode == ReadMode::Lease && self.role == Role::Leader {
            self.reads.round += 1;
            self.lease_round_sent(self.reads.round);
        }
    }

    /// Records when `round` was sent.
    pub(super) fn lease_round_sent(&mut self, round: u64) {
        if self.cfg.read_mode != ReadMode::Lease || self.role != Role::Leader {
            return;
        }
        let sent = &mut self.reads.lease.sent;
        if sent.len() >= MAX_TRACKED_ROUNDS {
            sent.pop_front();
        }
        sent.push_back((round, self.reads.ticks));
    }

    /// After an ack: the newest round a majority echoed extends the lease to
    /// its send tick plus the lease length.
    pub(super) fn lease_on_ack(&mut self) {
        if self.cfg.read_mode != ReadMode::Lease || self.reads.lease.sent.is_empty() {
            return;
        }
        let need = self
            .cluster
            .quorum()
            .saturating_sub(usize::from(self.is_voter()));
        let confirmed = if need == 0 {
            u64::MAX
        } else {
            let mut acks: Vec<u64> = self
                .reads
                .acks
                .iter()
                .filter(|(id, _)| self.cluster.is_voter(id))
                .map(|(_, round)| *round)
                .collect();
            acks.sort_unstable_by(|a, b| b.cmp(a));
            match acks.get(need - 1) {
                Some(round) => *round,
                None => return,
            }
        };
        let lease = &mut self.reads.lease;
        let mut start = None;
        while let Some(&(round, tick)) = lease.sent.front() {
            if round > confirmed {
                break;
            }
            lease.sent.pop_front();
            if round > lease.floor {
                start = Some(tick);
            }
        }
        if let Some(tick) = start {
            lease.until = lease.until.max(tick + self.cfg.lease_ticks());
        }
    }

    /// A node that just started may have acknowledged a leader before it
    /// crashed: in lease mode it treats its start as having heard from one.
    pub(super) fn lease_boot_hold(&self) -> bool {
        self.cfg.read_mode == ReadMode::Lease
            && self.reads.ticks < self.cfg.election_timeout_min_ticks
    }
}
