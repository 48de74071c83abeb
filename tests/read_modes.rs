//! `--read-mode lease` on real processes: reads on the leader and on
//! followers see every acknowledged write, and a leader stopped (SIGSTOP)
//! past its lease and resumed never answers from the lease it held.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{LineClient, TestCluster, wait_for};

const LEASE: [&str; 2] = ["--read-mode", "lease"];

#[test]
fn lease_reads_see_every_acknowledged_write() {
    let cluster = TestCluster::launch(3, &LEASE);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let follower = cluster.other_than(&leader);
    let mut on_leader = cluster.client(&leader);
    let mut on_follower = cluster.client(&follower);
    for i in 0..50 {
        assert_eq!(on_leader.cmd(&format!("SET k v{i}")), "OK");
        assert_eq!(on_leader.cmd("GET k"), format!("VALUE v{i}"));
        assert_eq!(on_follower.cmd("GET k"), format!("VALUE v{i}"));
    }
    // Pipelined reads on a follower (forwarded as batches) all see it.
    let mut batch = Vec::new();
    for _ in 0..200 {
        batch.extend_from_slice(b"GET k\n");
    }
    on_follower.send_raw(&batch);
    for _ in 0..200 {
        assert_eq!(on_follower.read_line().unwrap(), b"VALUE v49");
    }
}

#[test]
fn a_resumed_leader_does_not_answer_from_its_old_lease() {
    let cluster = TestCluster::launch(3, &LEASE);
    let old = cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(cluster.client(&old).cmd("SET k before"), "OK");
    // A read waits in the stopped leader's socket while another node leads
    // and overwrites the key.
    let mut queued = LineClient::connect(&cluster.node(&old).client_addr());
    cluster.pause(&old);
    queued.send_raw(b"GET k\n");
    let new = cluster.wait_for_leader_other_than(&old, Duration::from_secs(5));
    assert_eq!(cluster.client(&new).cmd("SET k after"), "OK");
    cluster.resume(&old);
    let reply = String::from_utf8(queued.read_line().unwrap()).unwrap();
    assert_ne!(reply, "VALUE before", "stale lease read after a pause");
    assert!(
        reply == "VALUE after" || reply.starts_with("ERR"),
        "unexpected reply {reply:?}"
    );
    wait_for(
        "the resumed node to read the new value",
        Duration::from_secs(5),
        || (cluster.client(&old).cmd("GET k") == "VALUE after").then_some(()),
    );
}
