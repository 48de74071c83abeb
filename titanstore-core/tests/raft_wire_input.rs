//! What arrives from peers is never trusted: arbitrary messages never panic
//! the core, late rejections and replies meant for someone else are ignored.
#![allow(clippy::unwrap_used)]

mod support;

use proptest::prelude::*;
use support::{Cluster, entry, node_with};
use titanstore_core::raft::{Message, MessageBody, RaftNode};
use titanstore_core::types::{ClusterConfig, Entry, EntryPayload, SnapshotMeta};

fn msg(from: &str, to: &str, body: MessageBody) -> Message {
    Message {
        from: from.into(),
        to: to.into(),
        body,
    }
}

/// Numbers that exercise the edges: small ones, and ones near `u64::MAX`.
fn num() -> impl Strategy<Value = u64> {
    prop_oneof![0..20u64, (u64::MAX - 20)..=u64::MAX, any::<u64>()]
}

fn wire_entry() -> impl Strategy<Value = Entry> {
    (num(), num()).prop_map(|(index, term)| Entry {
        index,
        term,
        payload: EntryPayload::Noop.into(),
    })
}

fn body() -> impl Strategy<Value = MessageBody> {
    prop_oneof![
        (num(), num(), num(), any::<bool>(), any::<bool>()).prop_map(
            |(term, i, t, pre_vote, transfer)| MessageBody::RequestVote {
                term,
                last_log_index: i,
                last_log_term: t,
                pre_vote,
                transfer,
            }
        ),
        (num(), any::<bool>(), any::<bool>()).prop_map(|(term, granted, pre_vote)| {
            MessageBody::RequestVoteReply {
                term,
                granted,
                pre_vote,
            }
        }),
        (
            num(),
            num(),
            num(),
            proptest::collection::vec(wire_entry(), 0..4),
            num(),
            num()
        )
            .prop_map(|(term, prev, prev_term, entries, commit, round)| {
                MessageBody::AppendEntries {
                    term,
                    prev_log_index: prev,
                    prev_log_term: prev_term,
                    entries,
                    leader_commit: commit,
                    read_round: round,
                }
            }),
        (num(), any::<bool>(), num(), num(), num(), num(), num()).prop_map(
            |(term, success, m, ci, ct, round, rej)| MessageBody::AppendEntriesReply {
                term,
                success,
                match_index: m,
                conflict_index: ci,
                conflict_term: ct,
                read_round: round,
                reject_index: rej,
                incarnation: 0,
            }
        ),
        (num(), num(), num()).prop_map(|(term, i, t)| MessageBody::InstallSnapshot {
            term,
            meta: SnapshotMeta {
                last_index: i,
                last_term: t,
                config: ClusterConfig::default(),
            },
            data: Vec::new(),
        }),
        (num(), num()).prop_map(|(term, i)| MessageBody::InstallSnapshotReply {
            term,
            last_index: i,
            incarnation: 0,
        }),
        (num(), num(), num()).prop_map(|(term, id, nonce)| MessageBody::ReadIndex {
            term,
            request_id: id,
            nonce
        }),
        (num(), num(), num(), any::<bool>(), num()).prop_map(|(term, id, i, ok, nonce)| {
            MessageBody::ReadIndexReply {
                term,
                request_id: id,
                read_index: i,
                ok,
                nonce,
            }
        }),
        num().prop_map(|term| MessageBody::TimeoutNow { term }),
        (any::<bool>(), any::<bool>())
            .prop_map(|(fresh, reply)| MessageBody::Hello { fresh, reply }),
    ]
}

fn drain(node: &mut RaftNode) {
    for _ in 0..10 {
        if !node.has_ready() {
            break;
        }
        let rd = node.ready();
        if let Some(last) = rd.entries.last() {
            node.on_persisted(rd.seq, last.index, last.term);
        }
        if let Some(s) = &rd.snapshot {
            node.on_snapshot_persisted(rd.seq, s.meta.last_index);
        }
        if let Some(last) = rd.committed_entries.last() {
            node.on_applied(last.index);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Review finding: `prev_index + 1 + i` overflowed (a panic in debug
    /// builds) on a hostile `prev_log_index`. Any sequence of arbitrary
    /// messages, to a follower and to a leader, must leave a working node.
    #[test]
    fn arbitrary_messages_never_panic(bodies in proptest::collection::vec(body(), 1..12)) {
        let ids = ["n1", "n2", "n3"];
        let mut follower = node_with("n2", &ids, 2, vec![entry(1, 1), entry(2, 2), entry(3, 2)]);
        let mut c = Cluster::new(&ids);
        c.elect("n1");
        for b in &bodies {
            follower.step(msg("n1", "n2", b.clone()));
            drain(&mut follower);
            c.node("n1").step(msg("n3", "n1", b.clone()));
            c.process();
        }
        c.pool.clear();
        // Both still answer the core's invariants.
        let s = follower.status();
        prop_assert!(s.commit <= s.last_index);
        let l = c.nodes["n1"].status();
        prop_assert!(l.commit <= l.last_index);
    }
}

/// Review finding: a rejection did not say which AppendEntries it rejected,
/// so a late rejection of an old message knocked a healthy follower back to
/// probing (and resent the log from far back).
#[test]
fn a_late_rejection_of_an_old_append_is_ignored() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    for i in 0..5 {
        c.node("n1")
            .propose(support::set("k", &i.to_string()))
            .unwrap();
        c.deliver_all();
    }
    let last = c.nodes["n1"].status().last_index;
    assert!(last >= 6);
    // n2 matched everything; now a rejection of the append anchored at 1 arrives late.
    let term = c.nodes["n1"].status().term;
    c.node("n1").step(msg(
        "n2",
        "n1",
        MessageBody::AppendEntriesReply {
            term,
            success: false,
            match_index: 0,
            conflict_index: 2,
            conflict_term: 0,
            read_round: 0,
            reject_index: 1,
            incarnation: 0,
        },
    ));
    let rd = c.node("n1").ready();
    let resent = rd.messages.iter().any(|m| {
        m.to == "n2"
            && matches!(m.body, MessageBody::AppendEntries { prev_log_index, .. } if prev_log_index < last)
    });
    assert!(
        !resent,
        "stale rejection made the leader resend old entries"
    );
    // Still replicating at full speed: a new entry goes out at once (a
    // follower knocked back to probing would get nothing until it answers).
    c.node("n1").propose(support::set("k", "new")).unwrap();
    let rd = c.node("n1").ready();
    let sent = rd.messages.iter().any(|m| {
        m.to == "n2"
            && matches!(&m.body, MessageBody::AppendEntries { entries, .. } if !entries.is_empty())
    });
    assert!(sent, "n2 was knocked back to probing by a stale rejection");
}

/// Review finding: ReadIndex replies were matched by request id alone, and
/// ids restart at 1 in every process, so a reply meant for an earlier
/// incarnation (or from a node that is not the leader asked) could answer a
/// new read with an older index.
#[test]
fn a_read_reply_for_another_incarnation_or_from_another_node_is_ignored() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.node("n2").read_index(1).unwrap();
    let rd = c.node("n2").ready();
    let nonce = rd
        .messages
        .iter()
        .find_map(|m| match m.body {
            MessageBody::ReadIndex { nonce, .. } => Some(nonce),
            _ => None,
        })
        .unwrap();
    let term = c.nodes["n2"].status().term;
    let reply = |nonce| MessageBody::ReadIndexReply {
        term,
        request_id: 1,
        read_index: 1,
        ok: true,
        nonce,
    };
    c.node("n2")
        .step(msg("n1", "n2", reply(nonce.wrapping_add(1))));
    c.node("n2").step(msg("n3", "n2", reply(nonce)));
    assert!(
        c.node("n2").ready().read_states.is_empty(),
        "a reply not meant for this read answered it"
    );
    c.node("n2").step(msg("n1", "n2", reply(nonce)));
    assert_eq!(c.node("n2").ready().read_states.len(), 1);
}
