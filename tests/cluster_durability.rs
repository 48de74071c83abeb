//! Durability: OK means on disk on a majority. A leader without followers
//! never says OK; every acknowledged write survives kill -9 of every node.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{TestCluster, set_via_leader};

#[test]
fn leader_without_a_majority_never_acknowledges() {
    let mut cluster = TestCluster::launch(3, &["--request-timeout-ms", "1000"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(cluster.client(&leader).cmd("SET a 1"), "OK");
    let followers: Vec<String> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.id.clone())
        .collect();
    for f in &followers {
        cluster.kill(f);
    }
    let reply = cluster.client(&leader).cmd("SET b 2");
    assert_ne!(reply, "OK", "a write without a majority was acknowledged");
    assert!(reply.starts_with("ERR"), "{reply}");
    // The unacknowledged write must not be readable as committed either.
    for f in &followers {
        cluster.start(f);
    }
    cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(set_via_leader(&cluster, "c", "3"), "OK");
}

#[test]
fn acknowledged_writes_survive_kill_9_of_every_node() {
    let mut cluster = TestCluster::launch(3, &[]);
    cluster.wait_for_leader(Duration::from_secs(10));
    for i in 0..100 {
        assert_eq!(
            set_via_leader(&cluster, &format!("k{i}"), &format!("v{i}")),
            "OK"
        );
    }
    cluster.kill_and_restart_all();
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client(&leader);
    for i in 0..100 {
        assert_eq!(c.cmd(&format!("GET k{i}")), format!("VALUE v{i}"));
    }
}

#[test]
fn sigterm_shuts_down_cleanly_and_restarts() {
    let mut cluster = TestCluster::launch(1, &[]);
    cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(cluster.client("node1").cmd("SET k v"), "OK");
    assert_eq!(cluster.stop("node1"), Some(0));
    cluster.start("node1");
    cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(cluster.client("node1").cmd("GET k"), "VALUE v");
}

/// A node whose disk was wiped must not vote with the old flags: its old
/// acknowledgements are promises it can no longer keep. It refuses to start
/// with an error that points at the runbook, and the cluster keeps serving.
#[test]
fn a_node_restarted_on_a_wiped_data_dir_refuses_to_take_part() {
    let mut cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(set_via_leader(&cluster, "a", "1"), "OK");
    let victim = cluster.other_than(&leader);
    cluster.kill(&victim);
    std::fs::remove_dir_all(&cluster.node(&victim).data_dir).unwrap();
    cluster.start_expecting_exit(&victim);
    let code = cluster.wait_exit(&victim, Duration::from_secs(10));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = std::fs::read_to_string(&cluster.node(&victim).log_path).unwrap();
    assert!(log.contains("Replace a dead node"), "{log}");
    assert_eq!(set_via_leader(&cluster, "b", "2"), "OK");
}
