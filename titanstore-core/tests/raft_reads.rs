//! ReadIndex and single-node behaviour through the public API.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, node_with, set};
use titanstore_core::raft::{Message, MessageBody, ReadError, Role};

#[test]
fn single_node_elects_itself_and_commits_after_persisting() {
    let mut n = node_with("solo", &["solo"], 0, Vec::new());
    for _ in 0..20 {
        n.tick();
    }
    assert_eq!(n.status().role, Role::Leader);
    let rd = n.ready();
    assert!(rd.hard_state.is_some());
    let (index, term) = n.propose(set("a", "1")).unwrap();
    assert_eq!(n.status().commit, 0, "nothing durable yet");
    let rd2 = n.ready();
    let last = rd2.entries.last().unwrap();
    assert_eq!((last.index, last.term), (index, term));
    n.on_persisted(rd2.seq, index, term);
    assert_eq!(n.status().commit, index);
    let rd3 = n.ready();
    assert_eq!(rd3.committed_entries.len() as u64, index);
    // A read on a single node is answered without any round trip.
    n.read_index(7).unwrap();
    let rd4 = n.ready();
    assert_eq!(rd4.read_states.len(), 1);
    assert_eq!(rd4.read_states[0].index, index);
}

#[test]
fn leader_read_needs_a_heartbeat_round() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    let commit = c.nodes["n1"].status().commit;
    c.down = vec!["n2".into(), "n3".into()];
    c.node("n1").read_index(1).unwrap();
    c.node("n1").read_index(2).unwrap();
    c.deliver_all();
    assert!(
        c.reads.get("n1").is_none_or(|r| r.is_empty()),
        "read answered without quorum"
    );
    c.down.clear();
    c.tick_all(2); // next heartbeat round is acked
    let reads = c.reads.get("n1").unwrap();
    assert_eq!(reads.len(), 2);
    assert!(reads.iter().all(|(_, idx)| *idx >= commit));
}

#[test]
fn follower_read_is_forwarded() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.node("n1").propose(set("k", "v")).unwrap();
    c.deliver_all();
    let commit = c.nodes["n1"].status().commit;
    c.node("n2").read_index(9).unwrap();
    c.deliver_all();
    assert_eq!(c.reads["n2"], vec![(9, commit)]);
    // No leader known: the read is refused at once.
    let mut lonely = node_with("x", &["x", "y", "z"], 0, Vec::new());
    assert_eq!(lonely.read_index(1), Err(ReadError::NoLeader));
}

#[test]
fn pending_reads_fail_when_leadership_is_lost() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.down = vec!["n2".into(), "n3".into()];
    c.node("n1").read_index(5).unwrap();
    c.deliver_all();
    c.tick_all(25); // check quorum deposes n1
    assert_ne!(c.nodes["n1"].status().role, Role::Leader);
    assert_eq!(c.failed_reads["n1"], vec![5]);
}

/// The ReadIndex requests in the pool, as (from, to, request id, nonce).
fn read_requests(c: &Cluster) -> Vec<(String, String, u64, u64)> {
    c.pool
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::ReadIndex {
                request_id, nonce, ..
            } => Some((m.from.clone(), m.to.clone(), request_id, nonce)),
            _ => None,
        })
        .collect()
}

#[test]
fn follower_forwards_reads_between_two_readys_as_one_request() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.node("n1").propose(set("k", "v")).unwrap();
    c.deliver_all();
    let commit = c.nodes["n1"].status().commit;
    for id in 1..=50 {
        c.node("n2").read_index(id).unwrap();
    }
    c.process();
    let requests = read_requests(&c);
    assert_eq!(requests.len(), 1, "one request for the batch: {requests:?}");
    assert_eq!(
        (requests[0].0.as_str(), requests[0].1.as_str()),
        ("n2", "n1")
    );
    c.deliver_all();
    let answered = &c.reads["n2"];
    assert_eq!(answered.len(), 50);
    assert!(answered.iter().all(|(_, index)| *index == commit));
    let mut ids: Vec<u64> = answered.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=50).collect::<Vec<u64>>());
    // A second batch gets a new request id.
    c.node("n2").read_index(51).unwrap();
    c.node("n2").read_index(52).unwrap();
    c.process();
    let second = read_requests(&c);
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].2, requests[0].2);
    c.deliver_all();
    assert_eq!(c.reads["n2"].len(), 52);
}

#[test]
fn a_reply_for_another_incarnation_or_from_another_node_answers_nothing() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.node("n2").read_index(1).unwrap();
    c.node("n2").read_index(2).unwrap();
    c.process();
    let (_, _, request_id, nonce) = read_requests(&c)[0].clone();
    c.pool.clear();
    let term = c.nodes["n2"].status().term;
    let reply = |from: &str, nonce: u64| Message {
        from: from.into(),
        to: "n2".into(),
        body: MessageBody::ReadIndexReply {
            term,
            request_id,
            read_index: 1,
            ok: true,
            nonce,
        },
    };
    c.node("n2").step(reply("n1", nonce.wrapping_add(1)));
    c.node("n2").step(reply("n3", nonce));
    c.process();
    assert!(c.reads.get("n2").is_none_or(|r| r.is_empty()));
    c.node("n2").step(reply("n1", nonce));
    c.process();
    assert_eq!(c.reads["n2"], vec![(1, 1), (2, 1)]);
}

#[test]
fn a_leader_change_fails_the_whole_forwarded_batch() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    for id in 1..=5 {
        c.node("n2").read_index(id).unwrap();
    }
    c.process();
    assert_eq!(read_requests(&c).len(), 1);
    // The leader dies before answering; n2 follows someone else (or no one).
    c.down = vec!["n1".into()];
    c.tick_all(25);
    assert_ne!(c.nodes["n2"].status().leader.as_deref(), Some("n1"));
    let mut failed = c.failed_reads["n2"].clone();
    failed.sort_unstable();
    assert_eq!(failed, vec![1, 2, 3, 4, 5]);
    assert!(c.reads.get("n2").is_none_or(|r| r.is_empty()));
}

#[test]
fn reads_not_yet_forwarded_fail_when_the_leader_changes() {
    let mut c = Cluster::new(&["n1", "n2", "n3"]);
    c.elect("n1");
    c.node("n2").read_index(7).unwrap();
    // Before n2's next ready(), n3 turns up as the leader of a later term.
    let term = c.nodes["n2"].status().term + 1;
    c.node("n2").step(Message {
        from: "n3".into(),
        to: "n2".into(),
        body: MessageBody::AppendEntries {
            term,
            prev_log_index: 0,
            prev_log_term: 0,
            entries: Vec::new(),
            leader_commit: 0,
            read_round: 0,
        },
    });
    assert_eq!(c.nodes["n2"].status().leader.as_deref(), Some("n3"));
    c.process();
    assert_eq!(c.failed_reads["n2"], vec![7]);
    assert!(read_requests(&c).iter().all(|r| r.0 != "n2"));
}
