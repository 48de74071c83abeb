//! ReadIndex and single-node behaviour through the public API.
#![allow(clippy::unwrap_used)]

mod support;

use support::{Cluster, node_with, set};
use titanstore_core::raft::{ReadError, Role};

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
