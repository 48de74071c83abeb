//! The bootstrap gate: a node that lost its data must never vote.
//!
//! A node that started on an empty data dir cannot tell "this is the first
//! start of a new cluster" from "my disk was wiped": in the second case its
//! old votes and acknowledgements were promises it can no longer keep, and a
//! vote from it can elect a leader that lacks acknowledged writes. So such a
//! node (`RaftConfig::fresh`) starts with its gate closed: it drops every Raft
//! message but the `Hello` handshake, never campaigns and never votes (not
//! even its term moves). It asks every configured peer whether it is new too.
//! The gate opens once every configured member confirmed that it is new, or,
//! after `bootstrap_grace_ticks`, once a majority did. A peer that answers
//! that it holds state means the cluster already exists: the node refuses to
//! take part (`Status::refused`); the runtime stops it with an error that
//! points at the replace-a-node runbook.

use std::collections::BTreeSet;

use super::message::MessageBody;
use super::node::RaftNode;
use crate::types::NodeId;

/// Where a node stands in the bootstrap handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Takes part in Raft normally.
    Open,
    /// Fresh and waiting: the peers that confirmed they are new, and ticks waited.
    Closed {
        confirmed: BTreeSet<NodeId>,
        waited: u64,
    },
    /// A peer already belongs to a cluster: this node must never take part.
    Refused(String),
}

impl Gate {
    pub(crate) fn initial(fresh: bool, has_peers: bool) -> Gate {
        if fresh && has_peers {
            Gate::Closed {
                confirmed: BTreeSet::new(),
                waited: 0,
            }
        } else {
            Gate::Open
        }
    }
}

impl RaftNode {
    /// Whether the node may take part in elections and replication.
    pub(super) fn gate_open(&self) -> bool {
        self.gate == Gate::Open
    }

    /// "New" as peers should hear it: started fresh and nothing durable since.
    fn claims_fresh(&self) -> bool {
        self.cfg.fresh && self.term == 0 && self.log.last_index() == 0
    }

    /// Per tick while the gate is closed: ask again, open when enough confirmed.
    pub(super) fn tick_gate(&mut self) {
        let Gate::Closed { waited, .. } = &mut self.gate else {
            return;
        };
        *waited += 1;
        let ask = (*waited - 1).is_multiple_of(self.cfg.heartbeat_ticks);
        if ask {
            for peer in self.voter_peers() {
                self.send(
                    peer,
                    MessageBody::Hello {
                        fresh: true,
                        reply: false,
                    },
                );
            }
        }
        self.maybe_open_gate();
    }

    fn maybe_open_gate(&mut self) {
        let Gate::Closed { confirmed, waited } = &self.gate else {
            return;
        };
        let others = self.voter_peers();
        let count = 1 + others.iter().filter(|p| confirmed.contains(*p)).count();
        let all = count == others.len() + 1;
        let grace_over = *waited >= self.cfg.bootstrap_grace_ticks;
        if all || (grace_over && count >= self.cluster.quorum()) {
            tracing::info!(
                id = %self.id, confirmed = count, members = others.len() + 1,
                "every member needed confirmed it is new: bootstrapping a new cluster"
            );
            self.gate = Gate::Open;
            self.reset_election_timer();
        }
    }

    /// The handshake, on both sides. Answers always; counts a peer's "new".
    pub(super) fn handle_hello(&mut self, from: NodeId, fresh: bool, reply: bool) {
        if !reply {
            let mine = self.claims_fresh();
            self.send(
                from.clone(),
                MessageBody::Hello {
                    fresh: mine,
                    reply: true,
                },
            );
        }
        let Gate::Closed { confirmed, .. } = &mut self.gate else {
            return;
        };
        if fresh {
            confirmed.insert(from);
            self.maybe_open_gate();
        } else {
            let reason = format!(
                "this node's data dir is empty but peer {from} already belongs to a cluster: \
                 a node that lost its data must not vote; remove it and add it back as a new \
                 member (see the README runbook \"Replace a dead node\")"
            );
            tracing::error!(id = %self.id, %from, "{reason}");
            self.gate = Gate::Refused(reason);
        }
    }
}
