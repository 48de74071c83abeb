//! Replication across three real nodes: writes on the leader are readable on
//! every node, followers redirect writes to the leader's client address.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{TestCluster, wait_for};

#[test]
fn writes_replicate_and_followers_redirect() {
    let cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let leader_addr = cluster.node(&leader).client_addr();
    let follower = cluster.other_than(&leader);

    assert_eq!(
        cluster
            .client(&leader)
            .cmd("SET user:42 {\"name\":\"zen\"}"),
        "OK"
    );
    // Linearizable GET on every node, followers included, sees the write at once.
    for node in &cluster.nodes {
        assert_eq!(
            cluster.client(&node.id).cmd("GET user:42"),
            "VALUE {\"name\":\"zen\"}",
            "GET on {}",
            node.id
        );
    }
    // Writes to a follower are redirected to the leader's client port.
    let mut f = cluster.client(&follower);
    assert_eq!(f.cmd("SET a 1"), format!("ERR NOT_LEADER {leader_addr}"));
    assert_eq!(f.cmd("DELETE a"), format!("ERR NOT_LEADER {leader_addr}"));
    assert_eq!(f.cmd("GET a"), "NOT_FOUND");

    assert_eq!(cluster.client(&leader).cmd("DELETE user:42"), "OK");
    for node in &cluster.nodes {
        assert_eq!(cluster.client(&node.id).cmd("GET user:42"), "NOT_FOUND");
    }
    // Stale reads converge too.
    cluster.client(&leader).cmd("SET s v");
    for node in &cluster.nodes {
        wait_for("stale read to converge", Duration::from_secs(5), || {
            (cluster.client(&node.id).cmd("SGET s") == "VALUE v").then_some(())
        });
    }
}

#[test]
fn five_nodes_elect_one_leader_and_commit() {
    let cluster = TestCluster::launch(5, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    for i in 0..20 {
        assert_eq!(cluster.client(&leader).cmd(&format!("SET k{i} v{i}")), "OK");
    }
    for node in &cluster.nodes {
        assert_eq!(cluster.client(&node.id).cmd("GET k19"), "VALUE v19");
    }
    let leaders = cluster
        .nodes
        .iter()
        .filter(|n| cluster.status(&n.id).unwrap().role == "leader")
        .count();
    assert_eq!(leaders, 1);
}

#[test]
fn non_utf8_values_replicate_and_do_not_jam_the_log() {
    let cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client(&leader);
    c.send_raw(b"SET bin \xff\xfe\xc3\x28 tail\n");
    assert_eq!(c.read_line().unwrap(), b"OK");
    // Replication keeps flowing after the invalid UTF-8 entry.
    assert_eq!(c.cmd("SET after ok"), "OK");
    for node in &cluster.nodes {
        let mut f = cluster.client(&node.id);
        f.send_raw(b"GET bin\n");
        assert_eq!(
            f.read_line().unwrap(),
            b"VALUE \xff\xfe\xc3\x28 tail",
            "on {}",
            node.id
        );
        assert_eq!(f.cmd("GET after"), "VALUE ok");
    }
}
