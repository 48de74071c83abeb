//! Lease reads (`ReadMode::Lease`) through the public API: answered without
//! a heartbeat round inside the lease, never after it expired, during a
//! leadership transfer, after stepping down or after the runtime said its
//! clock fell behind; and the follower side of the lease (no votes).
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, raft_config, set};
use titanstore_core::raft::{Message, MessageBody, RaftConfig, ReadMode, Role};

const IDS: [&str; 3] = ["n1", "n2", "n3"];

/// Three lease-mode nodes past their start-up hold, `n1` leading with a lease.
fn lease_cluster() -> Cluster {
    let mut c = Cluster::with_config(&IDS, |cfg| cfg.read_mode = ReadMode::Lease);
    let min = raft_config("n1").election_timeout_min_ticks;
    for id in IDS {
        for _ in 0..min {
            c.node(id).tick();
        }
    }
    c.process();
    c.pool.clear();
    c.elect("n1");
    c.node("n1").propose(set("k", "v")).unwrap();
    c.deliver_all();
    // A heartbeat round acknowledged by a majority starts the lease.
    tick_until(&mut c, |c| c.nodes["n1"].has_read_lease(), 10);
    c
}

fn tick_until(c: &mut Cluster, done: impl Fn(&Cluster) -> bool, max: usize) -> usize {
    for n in 0..max {
        if done(c) {
            return n;
        }
        c.tick_all(1);
    }
    assert!(done(c), "condition not reached in {max} ticks");
    max
}

fn lease_ticks() -> u64 {
    let mut cfg = raft_config("n1");
    cfg.read_mode = ReadMode::Lease;
    cfg.lease_ticks()
}

/// Whether `read` of `id` was answered, at which index.
fn answered(c: &Cluster, id: &str, read: u64) -> Option<u64> {
    c.reads
        .get(id)
        .and_then(|r| r.iter().find(|(rid, _)| *rid == read).map(|(_, i)| *i))
}

#[test]
fn lease_length_follows_the_drift_bound() {
    let mut cfg = RaftConfig::new("x");
    cfg.read_mode = ReadMode::Lease;
    cfg.election_timeout_min_ticks = 15;
    cfg.election_timeout_max_ticks = 30;
    // floor(14 * 0.9) - 2
    assert_eq!(cfg.lease_ticks(), 10);
    cfg.lease_drift_percent = 50;
    assert_eq!(cfg.lease_ticks(), 5);
}

#[test]
fn lease_mode_needs_check_quorum() {
    let mut cfg = raft_config("n1");
    cfg.read_mode = ReadMode::Lease;
    cfg.check_quorum = false;
    let boot = titanstore_core::raft::Bootstrap {
        snapshot: titanstore_core::types::SnapshotMeta {
            config: support::config_of(&IDS),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(titanstore_core::raft::RaftNode::new(cfg, boot).is_err());
}

#[test]
fn inside_the_lease_reads_are_answered_without_a_round() {
    let mut c = lease_cluster();
    let commit = c.nodes["n1"].status().commit;
    // Even with both followers unreachable: no message is needed.
    c.down = vec!["n2".into(), "n3".into()];
    for read in 1..=3 {
        c.node("n1").read_index(read).unwrap();
    }
    c.process();
    assert!(c.pool.is_empty(), "a lease read sent {:?}", c.pool);
    for read in 1..=3 {
        assert_eq!(answered(&c, "n1", read), Some(commit));
    }
    // A follower's read is answered by the leader on arrival, too.
    c.down.clear();
    c.node("n2").read_index(4).unwrap();
    c.deliver_all();
    assert_eq!(answered(&c, "n2", 4), Some(commit));
}

#[test]
fn after_the_lease_expires_a_read_waits_for_a_round() {
    let mut c = lease_cluster();
    c.down = vec!["n2".into(), "n3".into()];
    let expired = tick_until(&mut c, |c| !c.nodes["n1"].has_read_lease(), 20);
    assert!(expired as u64 <= lease_ticks(), "lease outlived its length");
    assert_eq!(c.nodes["n1"].status().role, Role::Leader);
    c.node("n1").read_index(1).unwrap();
    c.deliver_all();
    assert_eq!(answered(&c, "n1", 1), None, "answered outside the lease");
    c.down.clear();
    c.tick_all(3);
    assert!(answered(&c, "n1", 1).is_some(), "the round answers it");
}

#[test]
fn no_lease_reads_during_a_transfer_nor_after_its_timeout_now() {
    let mut c = lease_cluster();
    // n2 is unreachable, so its TimeoutNow (n2 is caught up) is lost.
    c.down = vec!["n2".into()];
    c.node("n1").transfer_leader(Some("n2".into())).unwrap();
    assert!(!c.nodes["n1"].has_read_lease());
    c.node("n1").read_index(1).unwrap();
    c.process();
    assert_eq!(answered(&c, "n1", 1), None, "lease read during a transfer");
    c.deliver_all();
    // The transfer is abandoned; n3 keeps acknowledging n1's heartbeats,
    // yet the lease stays off in this term: the TimeoutNow may still arrive.
    let max = raft_config("n1").election_timeout_max_ticks as usize;
    tick_until(
        &mut c,
        |c| c.nodes["n1"].transferring_to().is_none(),
        max + 1,
    );
    c.tick_all(5);
    assert_eq!(c.nodes["n1"].status().role, Role::Leader);
    assert!(!c.nodes["n1"].has_read_lease());
    c.node("n1").read_index(2).unwrap();
    c.process();
    assert_eq!(answered(&c, "n1", 2), None, "lease read after a TimeoutNow");
    c.deliver_all();
    assert!(answered(&c, "n1", 2).is_some(), "ReadIndex still works");
}

#[test]
fn a_leader_that_steps_down_stops_at_once() {
    let mut c = lease_cluster();
    let term = c.nodes["n1"].status().term;
    c.node("n1").step(Message {
        from: "n3".into(),
        to: "n1".into(),
        body: MessageBody::AppendEntriesReply {
            term: term + 1,
            success: false,
            match_index: 0,
            conflict_index: 0,
            conflict_term: 0,
            read_round: 0,
            reject_index: 0,
            incarnation: 0,
        },
    });
    assert_ne!(c.nodes["n1"].status().role, Role::Leader);
    assert!(!c.nodes["n1"].has_read_lease());
    assert!(c.node("n1").read_index(1).is_err());
    // Stepping down for a stalled disk, too.
    let mut c = lease_cluster();
    c.node("n1").set_disk_stalled(true);
    assert!(!c.nodes["n1"].has_read_lease());
}

#[test]
fn a_dropped_lease_comes_back_only_from_a_later_round() {
    let mut c = lease_cluster();
    // A heartbeat round goes out, then the runtime finds its clock behind.
    let heartbeat = raft_config("n1").heartbeat_ticks;
    for _ in 0..heartbeat {
        c.node("n1").tick();
    }
    c.process();
    c.node("n1").drop_read_lease();
    assert!(!c.nodes["n1"].has_read_lease());
    // Acks of the round sent before the drop do not renew it.
    c.deliver_all();
    assert!(!c.nodes["n1"].has_read_lease());
    // The next round does.
    tick_until(
        &mut c,
        |c| c.nodes["n1"].has_read_lease(),
        2 * heartbeat as usize,
    );
}

/// A vote request for a later term, as a candidate that timed out sends it.
fn vote_request(from: &str, to: &str, term: u64, pre_vote: bool) -> Message {
    Message {
        from: from.into(),
        to: to.into(),
        body: MessageBody::RequestVote {
            term,
            last_log_index: 100,
            last_log_term: 100,
            pre_vote,
            transfer: false,
        },
    }
}

fn granted(c: &mut Cluster, id: &str) -> bool {
    let rd = c.node(id).ready();
    rd.messages
        .iter()
        .chain(rd.persisted_messages.iter())
        .any(|m| matches!(m.body, MessageBody::RequestVoteReply { granted: true, .. }))
}

#[test]
fn followers_refuse_votes_inside_the_lease_and_a_restarted_node_too() {
    let mut c = lease_cluster();
    let term = c.nodes["n2"].status().term;
    c.node("n2").step(vote_request("n3", "n2", term + 1, true));
    c.node("n2").step(vote_request("n3", "n2", term + 1, false));
    assert!(!granted(&mut c, "n2"));
    assert_eq!(c.nodes["n2"].status().term, term);
    // A node that just (re)started cannot know whom it heard from: it waits
    // one minimum election timeout before it votes.
    let mut cfg = raft_config("n2");
    cfg.read_mode = ReadMode::Lease;
    let mut fresh = Cluster::with_config(&IDS, |cfg| cfg.read_mode = ReadMode::Lease);
    fresh.node("n2").step(vote_request("n3", "n2", 5, false));
    assert!(!granted(&mut fresh, "n2"));
    for _ in 0..cfg.election_timeout_min_ticks {
        fresh.node("n2").tick();
    }
    let _ = fresh.node("n2").ready();
    fresh.node("n2").step(vote_request("n3", "n2", 5, false));
    assert!(granted(&mut fresh, "n2"));
}
