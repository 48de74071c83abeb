//! One test per bug of the original project (and a few close relatives),
//! each built as an exact interleaving with the hand-driven cluster.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, config_of, entry, node_with, set};
use titanstore_core::raft::{Message, MessageBody, Role};
use titanstore_core::types::{ClusterConfig, Entry, EntryPayload, SnapshotMeta};

fn msg(from: &str, to: &str, body: MessageBody) -> Message {
    Message {
        from: from.into(),
        to: to.into(),
        body,
    }
}

/// Bug 1: a write was acknowledged after the leader's own fsync only.
#[test]
fn commit_waits_for_a_persisted_majority() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    let base = c.nodes["n1"].status().commit;
    // Followers are down: the leader alone (even durably) is no majority.
    c.down = vec!["n2".into(), "n3".into()];
    let (index, _) = c.node("n1").propose(set("a", "1")).unwrap();
    c.deliver_all();
    c.tick_all(3);
    assert_eq!(
        c.nodes["n1"].status().commit,
        base,
        "committed without a majority"
    );

    // n2 receives the entry but its disk is slow: its reply must wait.
    c.down.clear();
    c.down.push("n3".into());
    c.hold_disk("n2");
    c.tick_all(12); // stalled replication falls back to probing: n2 gets the entry
    assert!(c.nodes["n2"].status().last_index >= index);
    assert_eq!(
        c.nodes["n1"].status().commit,
        base,
        "follower acked before fsync"
    );

    // Once n2's disk catches up, its reply goes out and the entry commits.
    c.flush_disk("n2");
    c.deliver_all();
    assert!(c.nodes["n1"].status().commit >= index);
}

/// The leader counts itself only up to its own persisted index.
#[test]
fn leader_counts_itself_only_when_persisted() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.hold_disk("n1");
    let (index, _) = c.node("n1").propose(set("a", "1")).unwrap();
    c.deliver_all();
    // n2 and n3 durable, leader not: 2 of 3 is a majority.
    assert!(c.nodes["n1"].status().commit >= index);

    // n2 durable, leader not: 1 of 3 is no majority.
    c.down = vec!["n3".into()];
    let (index2, _) = c.node("n1").propose(set("b", "2")).unwrap();
    c.deliver_all();
    assert!(c.nodes["n2"].status().last_index >= index2);
    assert!(
        c.nodes["n1"].status().commit < index2,
        "leader counted its unpersisted entry"
    );
    c.release_disk("n1");
    c.deliver_all();
    assert!(c.nodes["n1"].status().commit >= index2);
}

/// Bug 2: an AppendEntries in the same term cleared the vote, so a node
/// could vote twice in one term.
#[test]
fn append_entries_never_clears_the_vote() {
    let ids = ["n1", "n2", "n3"];
    let mut n1 = node_with("n1", &ids, 4, Vec::new());
    let vote = |from: &str| {
        msg(
            from,
            "n1",
            MessageBody::RequestVote {
                term: 5,
                last_log_index: 10,
                last_log_term: 4,
                pre_vote: false,
                transfer: false,
            },
        )
    };
    n1.step(vote("n2"));
    let rd = n1.ready();
    assert_eq!(
        rd.hard_state.as_ref().unwrap().voted_for.as_deref(),
        Some("n2")
    );
    assert!(matches!(
        rd.persisted_messages[0].body,
        MessageBody::RequestVoteReply { granted: true, .. }
    ));
    assert!(
        rd.messages.is_empty(),
        "vote reply must wait for the vote to be durable"
    );

    n1.step(msg(
        "n2",
        "n1",
        MessageBody::AppendEntries {
            term: 5,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 0,
            read_round: 0,
        },
    ));
    let rd = n1.ready();
    assert!(rd.hard_state.is_none(), "term/vote must not change");
    n1.step(vote("n3"));
    let rd = n1.ready();
    let granted = rd.persisted_messages.iter().any(|m| {
        m.to == "n3" && matches!(m.body, MessageBody::RequestVoteReply { granted: true, .. })
    });
    assert!(!granted, "second vote in term 5");
}

/// Bug 3: followers did not truncate conflicting entries, so a stale entry
/// survived behind a new one and could win an election.
#[test]
fn follower_truncates_conflicts_but_keeps_matching_entries() {
    let ids = ["n1", "n2", "n3"];
    let old = vec![entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)];
    let mut n3 = node_with("n3", &ids, 2, old);
    let append = |prev: u64, prev_term: u64, entries| {
        msg(
            "n1",
            "n3",
            MessageBody::AppendEntries {
                term: 3,
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: 0,
                read_round: 0,
            },
        )
    };
    n3.step(append(2, 1, vec![entry(3, 3)]));
    let rd = n3.ready();
    assert_eq!(
        rd.entries,
        vec![entry(3, 3)],
        "storage must rewrite from index 3"
    );
    let s = n3.status();
    assert_eq!(s.last_index, 3, "stale entry 4 (term 2) must be gone");
    for m in &rd.persisted_messages {
        n3.on_persisted(rd.seq, 3, 3);
        assert!(matches!(
            m.body,
            MessageBody::AppendEntriesReply {
                success: true,
                match_index: 3,
                ..
            }
        ));
    }

    // A delayed, older AppendEntries must not truncate matching entries.
    n3.step(append(1, 1, vec![entry(2, 1)]));
    let rd = n3.ready();
    assert!(rd.entries.is_empty());
    assert_eq!(n3.status().last_index, 3);

    // n3 must refuse a candidate whose log ends with the stale term-2 entry.
    n3.step(msg(
        "n2",
        "n3",
        MessageBody::RequestVote {
            term: 4,
            last_log_index: 4,
            last_log_term: 2,
            pre_vote: false,
            transfer: false,
        },
    ));
    let rd = n3.ready();
    assert!(
        rd.persisted_messages
            .iter()
            .all(|m| !matches!(m.body, MessageBody::RequestVoteReply { granted: true, .. }))
    );
}

/// A conflict hint lets the leader skip a whole term at once.
#[test]
fn rejection_carries_a_conflict_hint() {
    let ids = ["n1", "n2", "n3"];
    let mut n2 = node_with("n2", &ids, 2, vec![entry(1, 1), entry(2, 2), entry(3, 2)]);
    n2.step(msg(
        "n1",
        "n2",
        MessageBody::AppendEntries {
            term: 3,
            prev_log_index: 3,
            prev_log_term: 3,
            entries: vec![],
            leader_commit: 0,
            read_round: 0,
        },
    ));
    let rd = n2.ready();
    assert!(matches!(
        rd.messages[0].body,
        MessageBody::AppendEntriesReply {
            success: false,
            conflict_index: 2,
            conflict_term: 2,
            ..
        }
    ));
}

/// Bug 4: a leader that could reach no one stayed leader forever.
#[test]
fn isolated_leader_steps_down() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.down = vec!["n2".into(), "n3".into()];
    let mut ticks = 0;
    while c.nodes["n1"].status().role == Role::Leader {
        c.node("n1").tick();
        c.deliver_all();
        ticks += 1;
        assert!(ticks <= 2 * 10 + 1, "leader did not step down");
    }
    let s = c.nodes["n1"].status();
    assert_eq!(s.role, Role::Follower);
    assert_eq!(s.leader, None);
    assert!(c.node("n1").propose(set("a", "1")).is_err());
}

/// Replies from an older term are ignored.
#[test]
fn stale_replies_are_ignored() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1"); // term 1
    c.node("n1").campaign(); // n1 is leader: no-op
    c.down = vec!["n2".into(), "n3".into()];
    // Make n1 leader of term 2 with an unreplicated entry.
    c.tick_all(25); // steps down (check quorum), then campaigns in vain
    c.down.clear();
    c.tick_all(40);
    let leader = c
        .nodes
        .values()
        .find(|n| n.status().role == Role::Leader)
        .map(|n| n.id().to_string())
        .unwrap();
    let term = c.nodes[&leader].status().term;
    assert!(term >= 2);
    c.down = vec!["n1".into(), "n2".into(), "n3".into()];
    let (index, _) = c.node(&leader).propose(set("x", "1")).unwrap();
    c.deliver_all();
    let before = c.nodes[&leader].status().commit;
    let other = if leader == "n2" { "n3" } else { "n2" };
    // A success reply from an older term claiming the entry.
    c.node(&leader).step(msg(
        other,
        &leader,
        MessageBody::AppendEntriesReply {
            term: term - 1,
            success: true,
            match_index: index,
            conflict_index: 0,
            conflict_term: 0,
            read_round: 0,
            reject_index: 0,
            incarnation: 0,
        },
    ));
    c.process();
    assert_eq!(c.nodes[&leader].status().commit, before);
    assert_eq!(c.nodes[&leader].status().role, Role::Leader);

    // A granted vote from an older term does not count for a candidate.
    let ids = ["a", "b", "c"];
    let mut a = node_with("a", &ids, 6, Vec::new());
    let mut cfg_vote = |granted| {
        a.step(msg(
            "b",
            "a",
            MessageBody::RequestVoteReply {
                term: 6,
                granted,
                pre_vote: false,
            },
        ))
    };
    cfg_vote(true);
    assert_ne!(a.status().role, Role::Leader);
}

/// A partitioned node's pre-votes do not disturb a healthy leader.
#[test]
fn pre_vote_keeps_a_rejoining_node_from_disrupting() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    let term = c.nodes["n1"].status().term;
    c.down = vec!["n3".into()];
    for _ in 0..100 {
        c.node("n3").tick();
        c.deliver_all();
    }
    assert_eq!(
        c.nodes["n3"].status().term,
        term,
        "pre-vote must not bump the term"
    );
    c.down.clear();
    c.tick_all(30);
    assert_eq!(c.nodes["n1"].status().role, Role::Leader);
    assert_eq!(c.nodes["n1"].status().term, term);
}

/// Raft §5.4.2: an old-term entry is never committed by counting replicas.
#[test]
fn old_term_entries_are_not_committed_by_counting() {
    let ids = ["n1", "n2", "n3"];
    // n1 holds an uncommitted entry of term 1 and becomes leader of term 2.
    let mut n1 = node_with("n1", &ids, 1, vec![entry(1, 1)]);
    n1.campaign();
    let _ = n1.ready();
    for (from, pre) in [("n2", true), ("n2", false)] {
        n1.step(msg(
            from,
            "n1",
            MessageBody::RequestVoteReply {
                term: 2,
                granted: true,
                pre_vote: pre,
            },
        ));
    }
    assert_eq!(n1.status().role, Role::Leader);
    let rd = n1.ready();
    let noop = rd.entries.last().unwrap().clone();
    assert_eq!((noop.index, noop.term), (2, 2));
    n1.on_persisted(rd.seq, 2, 2);
    // n2 acknowledges only the term-1 entry: a majority holds it, but it
    // must not be committed until the term-2 no-op is.
    n1.step(msg(
        "n2",
        "n1",
        MessageBody::AppendEntriesReply {
            term: 2,
            success: true,
            match_index: 1,
            conflict_index: 0,
            conflict_term: 0,
            read_round: 0,
            reject_index: 0,
            incarnation: 0,
        },
    ));
    assert_eq!(n1.status().commit, 0);
    n1.step(msg(
        "n2",
        "n1",
        MessageBody::AppendEntriesReply {
            term: 2,
            success: true,
            match_index: 2,
            conflict_index: 0,
            conflict_term: 0,
            read_round: 0,
            reject_index: 0,
            incarnation: 0,
        },
    ));
    assert_eq!(n1.status().commit, 2);
}

/// Found in review: a follower acked a snapshot's last index before the
/// snapshot was durable; a crash then left the leader believing it matched.
#[test]
fn snapshot_is_not_acknowledged_before_it_is_durable() {
    let ids = ["n1", "n2", "n3"];
    let mut n2 = node_with("n2", &ids, 1, (1..=20).map(|i| entry(i, 1)).collect());
    let _ = n2.ready();
    let meta = SnapshotMeta {
        last_index: 10,
        last_term: 2,
        config: config_of(&ids),
    };
    n2.step(msg(
        "n1",
        "n2",
        MessageBody::InstallSnapshot {
            term: 3,
            meta,
            data: vec![],
        },
    ));
    assert!(n2.ready().snapshot.is_some());
    n2.step(msg(
        "n1",
        "n2",
        MessageBody::AppendEntries {
            term: 3,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: vec![],
            leader_commit: 10,
            read_round: 0,
        },
    ));
    let rd = n2.ready();
    let early_ack = rd.messages.iter().any(|m| {
        matches!(
            m.body,
            MessageBody::AppendEntriesReply {
                success: true,
                match_index: 10,
                ..
            }
        )
    });
    assert!(
        !early_ack,
        "acked before the snapshot was durable: {:?}",
        rd.messages
    );
    n2.on_snapshot_persisted(rd.seq, 10);
    assert_eq!(n2.status().snapshot_index, 10);
}

/// Configs of the log one after the other, from leader n1, one AppendEntries each.
fn replay_configs(node: &mut titanstore_core::raft::RaftNode, configs: &[ClusterConfig]) {
    for (i, config) in configs.iter().enumerate() {
        let index = i as u64 + 1;
        node.step(msg(
            "n1",
            "n4",
            MessageBody::AppendEntries {
                term: 1,
                prev_log_index: index - 1,
                prev_log_term: if index == 1 { 0 } else { 1 },
                entries: vec![Entry {
                    term: 1,
                    index,
                    payload: EntryPayload::Config(config.clone()).into(),
                }],
                leader_commit: index,
                read_round: 0,
            },
        ));
        let _ = node.ready();
    }
}

/// A node that joins afresh under an id the cluster had before reads the
/// configs of that earlier life first: it must not take them for its own
/// removal and re-addition. A node that was a member in this life and then
/// sees itself added again by another life (or by hand) refuses.
#[test]
fn only_a_node_added_again_in_its_own_life_refuses() {
    let founders = config_of(&["n1", "n2", "n3"]);
    let with_n4 = |incarnation: u64| {
        let mut c = founders.clone();
        c.learners.insert(
            "n4".into(),
            titanstore_core::types::MemberAddr {
                raft_addr: "n4:1".into(),
                client_addr: "n4:2".into(),
            },
        );
        c.incarnations.insert("n4".into(), incarnation);
        c
    };
    let history = [founders.clone(), with_n4(1), founders.clone(), with_n4(2)];
    let joiner = |incarnation: u64| {
        let mut cfg = support::raft_config("n4");
        cfg.member_incarnation = Some(incarnation);
        support::node_with_config(cfg, &[], 1, Vec::new())
    };
    // The second life (incarnation 2) replays the first life's add and removal.
    let mut second = joiner(2);
    replay_configs(&mut second, &history);
    assert_eq!(second.refusal(), None, "a fresh joiner refused");
    // The first life saw itself named, was removed, and sees another life added.
    let mut first = joiner(1);
    replay_configs(&mut first, &history);
    assert!(
        first.refusal().is_some_and(|r| r.contains("added again")),
        "{:?}",
        first.refusal()
    );
}
