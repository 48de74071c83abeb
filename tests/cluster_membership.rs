//! Membership and leadership at runtime, on real processes: grow 3 -> 5
//! while writing, replace a node whose disk is gone, remove the leader,
//! transfer leadership, refuse a duplicate address.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{LineClient, TestCluster, set_via_leader, wait_for};

const T: Duration = Duration::from_secs(20);

/// Sends `line` to the leader, following redirects.
fn via_leader(cluster: &TestCluster, line: &str) -> String {
    let mut addr = cluster.node(&cluster.wait_for_leader(T)).client_addr();
    for _ in 0..10 {
        let reply = LineClient::connect(&addr).cmd(line);
        match reply.strip_prefix("ERR NOT_LEADER ") {
            Some(leader) => addr = leader.to_string(),
            None => return reply,
        }
    }
    panic!("no leader answered {line:?}");
}

fn members(cluster: &TestCluster, id: &str) -> String {
    cluster.client(id).cmd("MEMBER LIST")
}

fn is_voter(list: &str, id: &str) -> bool {
    list.split_whitespace()
        .any(|m| m.starts_with(&format!("{id}:")) && m.ends_with(":voter"))
}

#[test]
fn grow_three_to_five_while_writing_then_every_write_is_everywhere() {
    let mut cluster = TestCluster::launch(3, &[]);
    cluster.wait_for_leader(T);
    let mut written = Vec::new();
    for i in 0..50 {
        assert_eq!(set_via_leader(&cluster, &format!("k{i}"), "before"), "OK");
        written.push((format!("k{i}"), "before".to_string()));
    }
    for new in ["node4", "node5"] {
        cluster.add_joining(new);
        // Keep writing while the new node catches up and is promoted.
        let mut n = 0;
        wait_for("the new node to become a voter", T, || {
            let key = format!("{new}-{n}");
            if set_via_leader(&cluster, &key, "during") == "OK" {
                written.push((key, "during".into()));
            }
            n += 1;
            is_voter(&members(&cluster, "node1"), new).then_some(())
        });
    }
    let list = members(&cluster, "node1");
    for id in ["node1", "node2", "node3", "node4", "node5"] {
        assert!(is_voter(&list, id), "{id} not a voter: {list}");
    }
    let status = cluster.status("node5").unwrap();
    assert_eq!(status.field("voters").as_deref(), Some("5"));
    // Every acknowledged write is readable on every member.
    for node in ["node1", "node2", "node3", "node4", "node5"] {
        let mut c = cluster.client(node);
        for (k, v) in &written {
            assert_eq!(c.cmd(&format!("GET {k}")), format!("VALUE {v}"), "{node}");
        }
    }
    // A restart of a joined node needs no flag change (its --join is ignored).
    cluster.kill("node4");
    cluster.start("node4");
    cluster.wait_for_leader(T);
}

#[test]
fn replace_a_node_whose_data_dir_was_deleted() {
    let mut cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(T);
    assert_eq!(set_via_leader(&cluster, "a", "1"), "OK");
    let dead = cluster.other_than(&leader);
    cluster.kill(&dead);
    std::fs::remove_dir_all(&cluster.node(&dead).data_dir).unwrap();
    assert_eq!(via_leader(&cluster, &format!("MEMBER REMOVE {dead}")), "OK");
    cluster.rejoin(&dead);
    wait_for("the replacement to become a voter", T, || {
        is_voter(&members(&cluster, &leader), &dead).then_some(())
    });
    assert_eq!(set_via_leader(&cluster, "b", "2"), "OK");
    let mut c = cluster.client(&dead);
    assert_eq!(c.cmd("GET a"), "VALUE 1");
    assert_eq!(c.cmd("GET b"), "VALUE 2");
}

#[test]
fn the_leader_removes_itself_and_stays_out() {
    let mut cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(T);
    assert_eq!(set_via_leader(&cluster, "a", "1"), "OK");
    assert_eq!(
        cluster
            .client(&leader)
            .cmd(&format!("MEMBER REMOVE {leader}")),
        "OK"
    );
    let status = wait_for("the removed leader to say so", T, || {
        cluster.status(&leader).filter(|s| s.role == "removed")
    });
    assert_eq!(status.role, "removed");
    let new_leader = cluster.wait_for_leader_other_than(&leader, T);
    let mut c = cluster.client(&new_leader);
    assert_eq!(c.cmd("SET b 2"), "OK");
    assert_eq!(c.cmd("GET a"), "VALUE 1");
    // Restarted from its old data dir, the removed node stays out.
    cluster.kill(&leader);
    cluster.start(&leader);
    // For several election timeouts, watch that nothing changes.
    let until = std::time::Instant::now() + Duration::from_millis(1200);
    while std::time::Instant::now() < until {
        if let Some(s) = cluster.status(&leader) {
            assert_eq!(s.role, "removed", "{s:?}");
        }
        let after = cluster.status(&new_leader).unwrap();
        assert_eq!(
            after.role, "leader",
            "the removed node disrupted the cluster"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!is_voter(&members(&cluster, &new_leader), &leader));

    // Added back by hand while it still runs on its old data dir, it refuses
    // the membership and exits with the way back (an empty dir and --join).
    let node = cluster.node(&leader);
    let add = format!(
        "MEMBER ADD {leader}:127.0.0.1:{}:{} learner",
        node.raft_port, node.client_port
    );
    let log_path = node.log_path.clone();
    assert_eq!(cluster.client(&new_leader).cmd(&add), "OK");
    let code = cluster.wait_exit(&leader, T);
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        log.contains("added again") && log.contains("--join"),
        "{log}"
    );
    let after = cluster.status(&new_leader).unwrap();
    assert_eq!(
        after.role, "leader",
        "the refused node disrupted the cluster"
    );
}

#[test]
fn transfer_leadership_to_a_named_node() {
    let cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(T);
    assert_eq!(set_via_leader(&cluster, "a", "1"), "OK");
    let target = cluster.other_than(&leader);
    assert_eq!(
        cluster.client(&leader).cmd(&format!("TRANSFER {target}")),
        "OK"
    );
    assert_eq!(cluster.wait_for_leader(T), target);
    // Without a target, the most caught-up voter takes over.
    assert_eq!(cluster.client(&target).cmd("TRANSFER"), "OK");
    // Transfer to the leader itself is OK at once.
    let now = cluster.wait_for_leader(T);
    assert_eq!(cluster.client(&now).cmd(&format!("TRANSFER {now}")), "OK");
    assert_eq!(set_via_leader(&cluster, "b", "2"), "OK");
}

#[test]
fn a_join_with_a_duplicate_address_is_refused_clearly() {
    let mut cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(T);
    let n2 = cluster.node("node2").client_port;
    let reply = cluster
        .client(&leader)
        .cmd(&format!("MEMBER ADD node9:127.0.0.1:1:{n2}"));
    assert!(reply.starts_with("ERR duplicate address"), "{reply}");
    let reply = cluster
        .client(&leader)
        .cmd("MEMBER ADD node2:127.0.0.1:2:3");
    assert!(reply.starts_with("ERR duplicate id"), "{reply}");
    assert_eq!(
        cluster.client(&leader).cmd("MEMBER BOGUS"),
        "ERR unknown MEMBER subcommand 'BOGUS' (LIST, ADD, PROMOTE, REMOVE)"
    );
    let reply = cluster.client(&leader).cmd("MEMBER REMOVE nobody");
    assert!(reply.starts_with("ERR unknown member"), "{reply}");
    let _ = &mut cluster;
}

/// A `--join` whose advertised address duplicates a member's is refused:
/// the new node exits with the reason instead of joining.
#[test]
fn a_join_whose_address_duplicates_a_member_exits_with_the_reason() {
    let cluster = TestCluster::launch(3, &[]);
    cluster.wait_for_leader(T);
    let dir = tempfile::tempdir().unwrap();
    let taken = cluster.node("node2").client_port;
    let join: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let child = std::process::Command::new(harness::BIN)
        .args(["--id", "node9", "--port", &harness::free_port().to_string()])
        .args(["--client-port", &harness::free_port().to_string()])
        .args(["--advertise-client-addr", &format!("127.0.0.1:{taken}")])
        .arg("--data-dir")
        .arg(dir.path().join("node9"))
        .args(["--join", &join.join(",")])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed if the test fails before it exits: nothing outlives the test.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let status = wait_for("the duplicate to give up", T, || {
        child.0.try_wait().unwrap()
    });
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains("duplicate address"), "{err}");
    assert!(!members(&cluster, "node1").contains("node9"));
}

/// A node started on another cluster's data dir keeps that cluster's id:
/// it refuses the messages of the cluster it was pointed at, logs both ids
/// and keeps running; that cluster goes on as if it were down.
#[test]
fn a_node_on_another_clusters_data_dir_is_refused() {
    let mut ours = TestCluster::launch(3, &[]);
    let mut other = TestCluster::launch(1, &[]);
    ours.wait_for_leader(Duration::from_secs(10));
    other.wait_for_leader(Duration::from_secs(10));
    let id_of = |c: &TestCluster, node: &str| {
        wait_for("a cluster id", Duration::from_secs(10), || {
            c.status(node)?.field("cluster_id").filter(|id| id != "-")
        })
    };
    let (our_id, other_id) = (id_of(&ours, "node1"), id_of(&other, "node1"));
    assert_ne!(our_id, other_id);
    other.stop("node1");
    ours.kill("node3");
    let dir = ours.node("node3").data_dir.clone();
    std::fs::remove_dir_all(&dir).unwrap();
    copy_dir(&other.node("node1").data_dir, &dir);
    ours.start("node3");
    let log = wait_for(
        "the refusal in node3's log",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(&ours.node("node3").log_path).ok()?;
            log.contains("refusing messages from a node of another cluster")
                .then_some(log)
        },
    );
    assert!(log.contains(&our_id) && log.contains(&other_id), "{log}");
    // (node3 may have been the leader when it was killed: a write can meet
    // the election; the same value is retried until it is acknowledged.)
    wait_for(
        "a write through the other two",
        Duration::from_secs(10),
        || (set_via_leader(&ours, "after", "yes") == "OK").then_some(()),
    );
    let status = ours.status("node3").expect("node3 keeps running");
    assert_eq!(
        status.field("cluster_id").as_deref(),
        Some(other_id.as_str())
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
