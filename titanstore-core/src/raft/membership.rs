//! Membership changes and leadership transfer.
//!
//! Changes are single-server (Raft dissertation §4.1): add a learner,
//! promote a learner to voter, remove a member. Each is one config entry and
//! takes effect as soon as it is in a node's log, committed or not (a node
//! always uses the latest config in its log; a truncated config entry puts
//! the previous one back). Two rules make single-server changes safe, the
//! second being the fix for the bug found in the original algorithm (a new
//! leader's uncommitted change racing an older one):
//! - one change at a time: no change is proposed while another is uncommitted;
//! - a leader proposes a change only after it has committed an entry of its
//!   own term (its no-op).
//!
//! We chose this over joint consensus because every change a user makes here
//! is one server at a time (grow, shrink, replace), which single-server
//! changes express directly with one entry each; joint consensus buys
//! arbitrary reconfigurations at the price of two-phase entries and dual
//! quorums in every commit and election path.
//!
//! Learners receive the log and snapshots but never vote and never count for
//! commit, check-quorum or ReadIndex. A leader that removes itself keeps
//! leading (without counting itself) until the change commits, then steps
//! down. A node not in its latest config never campaigns.
//!
//! Transfer: the leader stops accepting writes, brings the target up to date,
//! then sends `TimeoutNow`; the target campaigns at once with vote requests
//! flagged `transfer`, which peers grant even inside their leader lease. A
//! transfer that does not finish within an election timeout is abandoned.

use super::ProposeError;
use super::message::MessageBody;
use super::node::RaftNode;
use super::progress::Progress;
use super::ready::Role;
use crate::types::{ClusterConfig, ConfChange, EntryPayload, LogIndex, MemberAddr, NodeId, Term};

/// A leadership transfer in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub(crate) target: NodeId,
    pub(crate) elapsed: u64,
    pub(crate) timeout_sent: bool,
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

fn port_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or("", |(_, port)| port)
}

/// Whether two members' addresses clash: same host and the same Raft or client port.
fn clashes(a: &MemberAddr, b: &MemberAddr) -> bool {
    host_of(&a.raft_addr) == host_of(&b.raft_addr)
        && (port_of(&a.raft_addr) == port_of(&b.raft_addr)
            || port_of(&a.client_addr) == port_of(&b.client_addr))
}

/// `config` with `change` made, or why it cannot be made.
pub fn apply_change(config: &ClusterConfig, change: &ConfChange) -> Result<ClusterConfig, String> {
    let mut next = config.clone();
    match change {
        ConfChange::AddLearner {
            id,
            addr,
            incarnation,
        } => {
            if config.is_member(id) {
                return Err(format!("duplicate id: {id} is already a member"));
            }
            if let Some((other, _, _)) = config.members().find(|(_, a, _)| clashes(a, addr)) {
                return Err(format!(
                    "duplicate address: {} / {} is already used by {other}",
                    addr.raft_addr, addr.client_addr
                ));
            }
            next.learners.insert(id.clone(), addr.clone());
            if let Some(inc) = incarnation {
                next.incarnations.insert(id.clone(), *inc);
            }
        }
        ConfChange::Promote { id } => {
            let Some(addr) = next.learners.remove(id) else {
                return Err(if config.is_voter(id) {
                    format!("{id} is already a voter")
                } else {
                    format!("unknown member {id}")
                });
            };
            next.voters.insert(id.clone(), addr);
        }
        ConfChange::Remove { id } => {
            next.incarnations.remove(id);
            if next.learners.remove(id).is_none() {
                if !config.is_voter(id) {
                    return Err(format!("unknown member {id}"));
                }
                if config.voters.len() == 1 {
                    return Err(format!("cannot remove {id}: it is the last voter"));
                }
                next.voters.remove(id);
            }
        }
    }
    Ok(next)
}

impl RaftNode {
    /// Proposes one membership change (leader only). Returns the config
    /// entry's (index, term); the change is done when it commits.
    pub fn propose_conf_change(
        &mut self,
        change: ConfChange,
    ) -> Result<(LogIndex, Term), ProposeError> {
        self.check_can_propose()?;
        if self.log.term(self.log.committed()) != Some(self.term) {
            return Err(ProposeError::BadChange(
                "the leader has not committed an entry of its term yet; retry".into(),
            ));
        }
        if self.conf_index > self.log.committed() {
            return Err(ProposeError::BadChange(
                "a membership change is in progress; retry when it is committed".into(),
            ));
        }
        let next = apply_change(&self.cluster, &change).map_err(ProposeError::BadChange)?;
        tracing::info!(id = %self.id, ?change, "proposing membership change");
        let index = self.log.append(self.term, EntryPayload::Config(next));
        self.append_pending = true;
        self.refresh_config();
        Ok((index, self.term))
    }

    /// Recomputes the config from the log (latest config entry, else the
    /// snapshot's) after appends that may carry one, or truncation.
    pub(super) fn refresh_config(&mut self) {
        let (config, index) = self.log.latest_config();
        let before = self.conf_index;
        self.conf_index = index;
        if config == self.cluster {
            return;
        }
        // Added again after a removal this log holds: a later config entry
        // that names this id. (Not a truncation back to an older config:
        // that has a lower index. The removal committed, since its leader
        // proposed the next change only after.) Only a node that joined
        // afresh with --join may come back, and then the config names its
        // new incarnation; this data dir's life in the cluster is over.
        let mine = self.cfg.member_incarnation;
        let named_mine = mine.is_some() && config.incarnations.get(&self.id) == mine.as_ref();
        if index > before
            && self.member_this_life
            && !self.cluster.voters.is_empty()
            && !self.cluster.is_member(&self.id)
            && config.is_member(&self.id)
            && !named_mine
        {
            let reason = format!(
                "{} was removed from the cluster and added again (config entry {index}) while \
                 this data dir still holds its old membership: wipe the data dir and start \
                 the node with --join to come back as a new member",
                self.id
            );
            tracing::error!(id = %self.id, index, "{reason}");
            self.gate = super::bootstrap::Gate::Refused(reason);
        }
        tracing::info!(id = %self.id, voters = config.voters.len(), learners = config.learners.len(),
            index, "membership changed");
        if self.cluster.is_member(&self.id)
            && !config.is_member(&self.id)
            && !config.voters.is_empty()
        {
            tracing::warn!(id = %self.id, index,
                "this node was removed from the cluster: it no longer campaigns; \
                 to add it back, start it on an empty data dir with --join");
        }
        if config.is_member(&self.id) && (mine.is_none() || named_mine) {
            self.member_this_life = true;
        }
        self.cluster = config;
        if self.role == Role::Leader {
            // Acks counted in the old config: a lease starts afresh.
            self.drop_read_lease();
            let next = self.log.last_index() + 1;
            let members = self.peers();
            self.progress.retain(|id, _| members.contains(id));
            for id in members {
                self.progress
                    .entry(id)
                    .or_insert_with(|| Progress::new(next));
            }
            if self
                .transfer
                .as_ref()
                .is_some_and(|t| !self.cluster.is_voter(&t.target))
            {
                self.transfer = None;
            }
        }
    }

    /// The config in effect at `index` (the latest config entry at or below
    /// it, else the snapshot's): what a snapshot taken at `index` must hold.
    pub fn config_at(&self, index: LogIndex) -> ClusterConfig {
        self.log.config_at(index)
    }

    /// Leader: once a change that removed this node commits, step down.
    pub(super) fn maybe_step_down_removed(&mut self) {
        if self.role == Role::Leader
            && !self.cluster.is_voter(&self.id)
            && self.log.committed() >= self.conf_index
        {
            tracing::info!(id = %self.id, term = self.term,
                "this node's removal is committed: stepping down");
            // Hand over at once to the most caught-up voter rather than
            // leaving the cluster an election timeout without a leader.
            let last = self.log.last_index();
            let successor = self
                .progress
                .iter()
                .filter(|(id, pr)| self.cluster.is_voter(id) && pr.matched >= last)
                .map(|(id, _)| id.clone())
                .next();
            if let Some(target) = successor {
                let term = self.term;
                self.send(target, MessageBody::TimeoutNow { term });
            }
            self.become_follower(self.term, None);
        }
    }

    /// Index of the entry holding the current config (the snapshot index if
    /// the config comes from the snapshot).
    pub fn conf_index(&self) -> LogIndex {
        self.conf_index
    }

    /// How far member `id`'s log is known to match the leader's (leader only).
    pub fn progress_matched(&self, id: &str) -> Option<LogIndex> {
        self.progress.get(id).map(|pr| pr.matched)
    }

    /// Starts a leadership transfer to `target` (or to the most caught-up
    /// voter). Returns the target; the transfer ends when it leads, or is
    /// abandoned after an election timeout.
    pub fn transfer_leader(&mut self, target: Option<NodeId>) -> Result<NodeId, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader.clone(),
            });
        }
        let target = match target {
            Some(t) => t,
            None => self
                .progress
                .iter()
                .filter(|(id, _)| self.cluster.is_voter(id))
                .max_by_key(|(_, pr)| pr.matched)
                .map(|(id, _)| id.clone())
                .ok_or_else(|| ProposeError::BadChange("no other voter to lead".into()))?,
        };
        if target == self.id {
            return Ok(target);
        }
        if !self.cluster.is_voter(&target) {
            return Err(ProposeError::BadChange(format!("{target} is not a voter")));
        }
        tracing::info!(id = %self.id, %target, "leadership transfer started");
        self.transfer = Some(Transfer {
            target: target.clone(),
            elapsed: 0,
            timeout_sent: false,
        });
        self.maybe_send_timeout_now(&target);
        if !self.transfer.as_ref().is_some_and(|t| t.timeout_sent) {
            self.send_append(&target, true);
        }
        Ok(target)
    }

    /// The transfer target in progress, if any.
    pub fn transferring_to(&self) -> Option<&NodeId> {
        self.transfer.as_ref().map(|t| &t.target)
    }

    /// Sends `TimeoutNow` once the transfer target's log matches ours.
    pub(super) fn maybe_send_timeout_now(&mut self, peer: &NodeId) {
        let last = self.log.last_index();
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        if t.target != *peer || t.timeout_sent {
            return;
        }
        if self.progress.get(peer).is_some_and(|pr| pr.matched >= last) {
            t.timeout_sent = true;
            // Its target may now be elected inside any follower's lease.
            self.lease_revoke();
            let term = self.term;
            self.send(peer.clone(), MessageBody::TimeoutNow { term });
        }
    }

    /// Per leader tick: abandon a transfer that takes longer than an election timeout.
    pub(super) fn tick_transfer(&mut self) {
        let limit = self.cfg.election_timeout_max_ticks;
        if let Some(t) = self.transfer.as_mut() {
            t.elapsed += 1;
            if t.elapsed >= limit {
                tracing::warn!(id = %self.id, target = %t.target,
                    "leadership transfer did not finish within an election timeout: abandoned");
                self.transfer = None;
            }
        }
    }
}
