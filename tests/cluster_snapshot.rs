//! Snapshots: automatic past the threshold, log compacted behind them, and a
//! node that was down during compaction catches up through InstallSnapshot.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{TestCluster, set_via_leader, wait_for};

#[test]
fn lagging_node_catches_up_through_install_snapshot() {
    let mut cluster = TestCluster::launch(3, &["--snapshot-threshold", "50"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let lagger = cluster.other_than(&leader);
    cluster.kill(&lagger);
    for i in 0..300 {
        assert_eq!(
            set_via_leader(&cluster, &format!("k{i}"), &format!("v{i}")),
            "OK"
        );
    }
    let status = cluster.status(&leader).unwrap();
    assert!(
        status.snapshot_index >= 50,
        "leader never snapshotted: {status:?}"
    );
    cluster.start(&lagger);
    wait_for(
        "lagging node to install the snapshot",
        Duration::from_secs(15),
        || {
            let status = cluster.status(&lagger)?;
            (status.snapshot_index >= 50 && status.applied >= 300).then_some(())
        },
    );
    let mut c = cluster.client(&lagger);
    for i in 0..300 {
        assert_eq!(c.cmd(&format!("SGET k{i}")), format!("VALUE v{i}"));
    }
    // Restarting from the snapshot plus the WAL tail keeps everything.
    cluster.kill(&lagger);
    cluster.start(&lagger);
    cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client(&lagger);
    for i in 0..300 {
        assert_eq!(c.cmd(&format!("GET k{i}")), format!("VALUE v{i}"));
    }
}

#[test]
fn entries_no_longer_in_memory_are_read_back_from_the_wal() {
    // No snapshot, and no entry kept in memory once durable and applied:
    // a lagging follower gets its entries from the leader's WAL, and a
    // restarted node applies its log from its own.
    let mut cluster = TestCluster::launch_with_metrics(
        3,
        &["--snapshot-threshold", "1000000", "--log-cache-mb", "0"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let lagger = cluster.other_than(&leader);
    cluster.kill(&lagger);
    for i in 0..400 {
        assert_eq!(
            set_via_leader(&cluster, &format!("k{i}"), &format!("v{i}")),
            "OK"
        );
    }
    let cached = |id: &str| {
        let port = cluster.node(id).metrics_port?;
        let (_, body) = harness::http_get(port, "/metrics")?;
        body.lines()
            .find_map(|l| l.strip_prefix("titanstore_log_cache_bytes "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    wait_for(
        "the leader to drop applied entries",
        Duration::from_secs(10),
        || cached(&leader).filter(|bytes| *bytes < 4096.0),
    );
    cluster.start(&lagger);
    wait_for(
        "the lagging node to catch up",
        Duration::from_secs(15),
        || {
            let status = cluster.status(&lagger)?;
            (status.applied >= 400).then_some(())
        },
    );
    let status = cluster.status(&lagger).unwrap();
    assert_eq!(status.snapshot_index, 0, "caught up through a snapshot");
    let mut c = cluster.client(&lagger);
    for i in 0..400 {
        assert_eq!(c.cmd(&format!("SGET k{i}")), format!("VALUE v{i}"));
    }
    // Every node restarted: each applies its whole log from its WAL.
    cluster.kill_and_restart_all();
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client(&leader);
    for i in 0..400 {
        assert_eq!(c.cmd(&format!("GET k{i}")), format!("VALUE v{i}"));
    }
}
