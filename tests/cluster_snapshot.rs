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
