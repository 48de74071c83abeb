//! The replica's membership requests: `MEMBER LIST/ADD/PROMOTE/REMOVE` and
//! `TRANSFER`, which take several steps (propose, wait for commit, wait for
//! a learner to catch up, promote; or wait for the target to lead), and the
//! writes held while a transfer runs. Everything here decides what a client
//! is told, so the whole-node simulation drives it like the rest of the
//! replica.

use super::{PendingWrite, Replica, Token};
use crate::protocol::{Member, MemberSpec, Reply};
use crate::raft::{ProposeError, Role};
use crate::types::{Command, ConfChange, MemberAddr, NodeId};

/// What a committed entry's client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum AfterCommit {
    Ok,
    /// `MEMBER ADD` of a voter: the learner is in; now wait until it caught up, then promote.
    CatchUpThenPromote(NodeId),
}

/// A `MEMBER ADD` waiting for its learner to catch up.
pub(super) struct CatchUp {
    pub(super) token: Token,
    pub(super) id: NodeId,
    pub(super) deadline: u64,
}

/// A `TRANSFER` waiting for the target to lead.
pub(super) struct PendingTransfer {
    pub(super) token: Token,
    pub(super) target: NodeId,
    pub(super) deadline: u64,
}

/// A write that arrived during a leadership transfer.
pub(super) struct HeldWrite {
    pub(super) token: Token,
    pub(super) command: Command,
    pub(super) deadline: u64,
}

/// A learner within this many entries of the leader counts as caught up.
const CATCH_UP_LAG: u64 = 64;

/// `MEMBERS` entries: `<id>:<host>:<raft_port>:<client_port>:<voter|learner>`.
fn member_list(config: &crate::types::ClusterConfig) -> Vec<String> {
    config
        .members()
        .map(|(id, addr, voter)| {
            let (host, raft_port) = addr
                .raft_addr
                .rsplit_once(':')
                .unwrap_or((&addr.raft_addr, ""));
            let client_port = addr.client_addr.rsplit_once(':').map_or("", |(_, p)| p);
            let role = if voter { "voter" } else { "learner" };
            format!("{id}:{host}:{raft_port}:{client_port}:{role}")
        })
        .collect()
}

/// Parses one `MEMBERS` entry back (for clients).
pub fn parse_member(entry: &str) -> Option<(MemberSpec, bool)> {
    let (spec, role) = entry.rsplit_once(':')?;
    Some((MemberSpec::parse(spec).ok()?, role == "voter"))
}

impl Replica {
    pub(super) fn member(&mut self, token: Token, member: Member, deadline: u64) {
        let config = self.raft.config().clone();
        let change = match member {
            Member::List => {
                let reply = Reply::Members(member_list(&config));
                self.reply(token, reply);
                return;
            }
            Member::Add {
                member,
                learner,
                incarnation,
            } => {
                let addr = MemberAddr {
                    raft_addr: member.raft_addr(),
                    client_addr: member.client_addr(),
                };
                // A retried ADD (a joining node that lost the reply) continues.
                let same_life = config.incarnations.get(&member.id) == incarnation.as_ref();
                if config.addr(&member.id) == Some(&addr) && same_life && self.is_leader() {
                    if config.is_voter(&member.id) || learner {
                        self.reply(token, Reply::Ok);
                    } else {
                        self.catching_up.push(CatchUp {
                            token,
                            id: member.id,
                            deadline,
                        });
                    }
                    return;
                }
                let then = if learner {
                    AfterCommit::Ok
                } else {
                    AfterCommit::CatchUpThenPromote(member.id.clone())
                };
                (
                    ConfChange::AddLearner {
                        id: member.id,
                        addr,
                        incarnation,
                    },
                    then,
                )
            }
            Member::Promote { id } => {
                if !self.is_leader() {
                    let reply = self.not_leader(self.raft.status().leader);
                    self.reply(token, reply);
                } else if config.is_voter(&id) {
                    self.reply(token, Reply::Ok);
                } else if !config.is_learner(&id) {
                    self.reply(token, Reply::Error(format!("unknown learner {id}")));
                } else {
                    // A learner is promoted only once it holds the log up to
                    // its own admission: a voter must be able to vote.
                    self.catching_up.push(CatchUp {
                        token,
                        id,
                        deadline,
                    });
                }
                return;
            }
            Member::Remove { id } => (ConfChange::Remove { id }, AfterCommit::Ok),
        };
        self.propose_change(token, change.0, change.1, deadline);
    }

    fn propose_change(
        &mut self,
        token: Token,
        change: ConfChange,
        then: AfterCommit,
        deadline: u64,
    ) {
        match self.raft.propose_conf_change(change) {
            Ok((index, term)) => self.writes.entry(index).or_default().push(PendingWrite {
                term,
                token,
                deadline,
                then,
            }),
            Err(ProposeError::NotLeader { leader }) => {
                let reply = self.not_leader(leader);
                self.reply(token, reply);
            }
            Err(err) => self.reply(token, Reply::Error(err.to_string())),
        }
    }

    pub(super) fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    pub(super) fn transfer(&mut self, token: Token, target: Option<NodeId>, deadline: u64) {
        let status = self.raft.status();
        if status.role != Role::Leader {
            let reply = match (&target, &status.leader) {
                (Some(t), Some(l)) if t == l => Reply::Ok,
                _ => self.not_leader(status.leader),
            };
            self.reply(token, reply);
            return;
        }
        match self.raft.transfer_leader(target) {
            Ok(t) if t == self.cfg.id => self.reply(token, Reply::Ok),
            Ok(t) => self.transfers.push(PendingTransfer {
                token,
                target: t,
                deadline,
            }),
            Err(err) => self.reply(token, Reply::Error(err.to_string())),
        }
    }

    /// Moves multi-step membership requests on: learners that caught up get
    /// promoted, transfers that ended are answered, held writes go out.
    pub(super) fn advance_member_ops(&mut self) {
        if self.catching_up.is_empty() && self.transfers.is_empty() && self.held_writes.is_empty() {
            return;
        }
        let status = self.raft.status();
        let leading = status.role == Role::Leader;
        for c in std::mem::take(&mut self.catching_up) {
            if !leading {
                self.reply(
                    c.token,
                    Reply::Error(format!(
                        "leadership changed while {} caught up; it stays a learner (MEMBER PROMOTE {})",
                        c.id, c.id
                    )),
                );
                continue;
            }
            let matched = self.raft.progress_matched(&c.id).unwrap_or(0);
            let holds_admission = matched >= self.raft.conf_index() && matched > 0;
            if holds_admission && matched + CATCH_UP_LAG >= status.last_index {
                let id = c.id.clone();
                match self.raft.propose_conf_change(ConfChange::Promote { id }) {
                    Ok((index, term)) => self.writes.entry(index).or_default().push(PendingWrite {
                        term,
                        token: c.token,
                        deadline: c.deadline,
                        then: AfterCommit::Ok,
                    }),
                    // Another change is still committing: try again later.
                    Err(ProposeError::BadChange(_)) | Err(ProposeError::Transferring { .. }) => {
                        self.catching_up.push(c)
                    }
                    Err(err) => self.reply(c.token, Reply::Error(err.to_string())),
                }
            } else {
                self.catching_up.push(c);
            }
        }
        let transferring = self.raft.transferring_to().cloned();
        for t in std::mem::take(&mut self.transfers) {
            if status.leader.as_ref() == Some(&t.target) {
                self.reply(t.token, Reply::Ok);
            } else if leading && transferring.as_ref() != Some(&t.target) {
                self.reply(
                    t.token,
                    Reply::Error(format!(
                        "transfer to {} did not finish within an election timeout; {} still leads",
                        t.target, self.cfg.id
                    )),
                );
            } else if !leading && status.leader.is_some() {
                self.reply(
                    t.token,
                    Reply::Error(format!(
                        "leadership moved to {} instead of {}",
                        status.leader.as_deref().unwrap_or("-"),
                        t.target
                    )),
                );
            } else {
                self.transfers.push(t);
            }
        }
        if transferring.is_none() && !self.held_writes.is_empty() {
            for held in std::mem::take(&mut self.held_writes) {
                self.propose(held.command, held.token, held.deadline);
            }
        }
    }
}
