//! The end-to-end story: writes, leader killed with SIGKILL, a new leader
//! within a couple of seconds, writes continue, the old leader rejoins and
//! catches up, and no acknowledged write is lost. Also pause (SIGSTOP).
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{TestCluster, set_via_leader, wait_for};

#[test]
fn leader_kill_reelection_and_rejoin_lose_nothing() {
    let mut cluster = TestCluster::launch(3, &[]);
    let first = cluster.wait_for_leader(Duration::from_secs(10));
    let mut acked = Vec::new();
    for i in 0..50 {
        assert_eq!(
            set_via_leader(&cluster, &format!("k{i}"), &format!("v{i}")),
            "OK"
        );
        acked.push(i);
    }
    cluster.kill(&first);
    let second = cluster.wait_for_leader(Duration::from_secs(5));
    assert_ne!(second, first);
    for i in 50..100 {
        assert_eq!(
            set_via_leader(&cluster, &format!("k{i}"), &format!("v{i}")),
            "OK"
        );
        acked.push(i);
    }
    cluster.start(&first);
    cluster.wait_for_leader(Duration::from_secs(10));
    // The old leader catches up: its stale reads converge to everything acked.
    wait_for("old leader to catch up", Duration::from_secs(10), || {
        let mut c = cluster.client(&first);
        acked
            .iter()
            .all(|i| c.cmd(&format!("SGET k{i}")) == format!("VALUE v{i}"))
            .then_some(())
    });
    for node in &cluster.nodes {
        let mut c = cluster.client(&node.id);
        for i in &acked {
            assert_eq!(c.cmd(&format!("GET k{i}")), format!("VALUE v{i}"));
        }
    }
}

#[test]
fn paused_leader_is_replaced_and_steps_down_on_resume() {
    let cluster = TestCluster::launch(3, &[]);
    let old = cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(cluster.client(&old).cmd("SET before pause"), "OK");
    cluster.pause(&old);
    let new = cluster.wait_for_leader_other_than(&old, Duration::from_secs(5));
    assert_eq!(cluster.client(&new).cmd("SET during pause"), "OK");
    cluster.resume(&old);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(
        leader, new,
        "the resumed node must not disrupt the new leader"
    );
    assert_eq!(cluster.client(&old).cmd("GET during"), "VALUE pause");
}
