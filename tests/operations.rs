//! Running it for real: `/metrics` and `/health` on live nodes, and the
//! client port's limits under hostile load (silent, slow and too many
//! connections, request bytes in flight, an over-long line sent in chunks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{LineClient, TestCluster, http_get, set_via_leader, wait_for};

const LEADER_WAIT: Duration = Duration::from_secs(10);

fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// SIGSTOPs (or SIGCONTs) every node but `leader`.
fn set_followers_paused(cluster: &TestCluster, leader: &str, paused: bool) {
    for node in cluster.nodes.iter().filter(|n| n.id != leader) {
        if paused {
            cluster.pause(&node.id);
        } else {
            cluster.resume(&node.id);
        }
    }
}

/// The server's last line to `client` starts with `prefix`, then it closed.
fn assert_closed_with(client: &mut LineClient, prefix: &str) {
    let line = client
        .read_line()
        .map(|l| String::from_utf8_lossy(&l).into_owned());
    assert!(
        line.as_deref().is_some_and(|l| l.starts_with(prefix)),
        "{line:?}"
    );
    assert!(client.is_closed());
}

#[test]
fn metrics_and_health_follow_the_cluster() {
    let mut cluster = TestCluster::launch_with_metrics(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_WAIT);
    for i in 0..20 {
        assert_eq!(set_via_leader(&cluster, &format!("k{i}"), "v"), "OK");
    }
    let port = |c: &TestCluster, id: &str| c.node(id).metrics_port.unwrap();
    let body = wait_for("the leader's metrics", LEADER_WAIT, || {
        let (status, body) = http_get(port(&cluster, &leader), "/metrics")?;
        (status == 200
            && metric(&body, "titanstore_proposals_total{outcome=\"committed\"}")? >= 20.0)
            .then_some(body)
    });
    for expected in [
        "titanstore_role{role=\"leader\"} 1",
        "# TYPE titanstore_wal_fsync_duration_seconds histogram",
        "titanstore_client_requests_total{command=\"set\"} 20",
        "# TYPE titanstore_client_request_duration_seconds histogram",
        "titanstore_peer_replication_lag_entries{peer=",
        "titanstore_peer_round_trip_seconds{peer=",
        "titanstore_event_loop_longest_pass_seconds",
        "titanstore_wal_segments 1",
    ] {
        assert!(body.contains(expected), "no {expected:?} in\n{body}");
    }
    for name in [
        "titanstore_term",
        "titanstore_commit_index",
        "titanstore_applied_index",
        "titanstore_last_index",
        "titanstore_leader_changes_total",
        "titanstore_wal_fsyncs_total",
        "titanstore_wal_bytes",
        "titanstore_client_connections",
    ] {
        assert!(metric(&body, name).is_some(), "no {name} in\n{body}");
    }
    assert!(metric(&body, "titanstore_commit_index").unwrap() >= 20.0);
    assert!(metric(&body, "titanstore_wal_bytes").unwrap() > 0.0);

    // Healthy everywhere once every node has applied what it knows committed.
    for node in ["node1", "node2", "node3"] {
        let (status, body) = wait_for("a healthy node", LEADER_WAIT, || {
            http_get(port(&cluster, node), "/health").filter(|(s, _)| *s == 200)
        });
        assert_eq!(status, 200);
        assert!(body.contains("\"healthy\":true"), "{body}");
        assert!(body.ends_with("}\n") && body.lines().count() == 1, "{body}");
    }

    // A node cut off from the others stops seeing a leader: 503 with a reason.
    let lone = cluster.other_than(&leader);
    for id in ["node1", "node2", "node3"] {
        if id != lone {
            cluster.kill(id);
        }
    }
    let (status, body) = wait_for("an unhealthy lone node", LEADER_WAIT, || {
        http_get(port(&cluster, &lone), "/health").filter(|(s, _)| *s == 503)
    });
    assert_eq!(status, 503);
    assert!(body.contains("no leader known"), "{body}");
    let (status, _) = http_get(port(&cluster, &lone), "/nothing-here").unwrap();
    assert_eq!(status, 404);
}

#[test]
fn a_leader_cut_off_from_its_quorum_reports_unhealthy() {
    let cluster = TestCluster::launch_with_metrics(3, &[]);
    let leader = cluster.wait_for_leader(LEADER_WAIT);
    let port = cluster.node(&leader).metrics_port.unwrap();
    wait_for("a healthy leader", LEADER_WAIT, || {
        http_get(port, "/health").filter(|(s, _)| *s == 200)
    });
    set_followers_paused(&cluster, &leader, true);
    // Check-quorum: it steps down after an election timeout (300 ms).
    let (_, body) = wait_for("the isolated leader to step down", LEADER_WAIT, || {
        http_get(port, "/health").filter(|(s, _)| *s == 503)
    });
    assert!(body.contains("no leader known"), "{body}");
    set_followers_paused(&cluster, &leader, false);
}

#[test]
fn idle_and_slow_connections_are_closed_active_ones_are_not() {
    let cluster = TestCluster::launch(1, &["--client-idle-timeout", "0.5"]);
    cluster.wait_for_leader(LEADER_WAIT);
    let addr = cluster.nodes[0].client_addr();
    let mut silent = LineClient::connect(&addr);
    let mut slow = LineClient::connect(&addr);
    let mut active = LineClient::connect(&addr);
    let started = Instant::now();
    // The slow one sends a byte of a request every 100 ms, never a whole line.
    let mut notice = None;
    while started.elapsed() < Duration::from_secs(5) && notice.is_none() {
        slow.send_raw(b"G");
        assert_eq!(active.cmd("PING"), "PONG");
        std::thread::sleep(Duration::from_millis(100));
        if started.elapsed() > Duration::from_millis(700) {
            notice = silent.read_line();
        }
    }
    let notice = String::from_utf8(notice.expect("the silent connection was not closed")).unwrap();
    assert!(notice.starts_with("ERR idle"), "{notice}");
    assert!(silent.is_closed());
    assert_closed_with(&mut slow, "ERR idle");
    assert_eq!(active.cmd("PING"), "PONG");
}

#[test]
fn ten_thousand_silent_connections_do_not_stop_new_clients() {
    // This test holds 10,000 sockets itself.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let cluster = TestCluster::launch(1, &[]);
    cluster.wait_for_leader(LEADER_WAIT);
    let addr = cluster.nodes[0].client_addr();
    let mut silent = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        match TcpStream::connect(&addr) {
            Ok(stream) => silent.push(stream),
            Err(err) => panic!("connection {} failed: {err}", silent.len()),
        }
    }
    let mut client = wait_for("a new client to be served", LEADER_WAIT, || {
        let mut c = LineClient::try_connect(&addr)?;
        (c.try_cmd("SET fresh yes")? == "OK").then_some(c)
    });
    assert_eq!(client.cmd("GET fresh"), "VALUE yes");
    drop(silent);
}

#[test]
fn past_max_connections_a_client_is_told_busy() {
    let cluster = TestCluster::launch(1, &["--max-connections", "4"]);
    cluster.wait_for_leader(LEADER_WAIT);
    let addr = cluster.nodes[0].client_addr();
    // (The connections of the leader check may take a moment to be released.)
    let mut held: Vec<LineClient> = Vec::new();
    wait_for("four served connections", LEADER_WAIT, || {
        let mut c = LineClient::connect(&addr);
        if c.cmd("PING") == "PONG" {
            held.push(c);
        }
        (held.len() == 4).then_some(())
    });
    let mut extra = LineClient::connect(&addr);
    assert_closed_with(&mut extra, "ERR BUSY");
    drop(held.pop());
    wait_for("a freed slot", LEADER_WAIT, || {
        LineClient::try_connect(&addr)?
            .try_cmd("PING")
            .filter(|r| r == "PONG")
    });
}

#[test]
fn request_bytes_in_flight_are_bounded_with_err_busy() {
    // Five writes of 20,009 bytes fill the budget exactly.
    let cluster = TestCluster::launch(3, &["--max-inflight-bytes", "100045"]);
    let leader = cluster.wait_for_leader(LEADER_WAIT);
    // With both followers paused nothing commits: the writes stay in flight.
    set_followers_paused(&cluster, &leader, true);
    let addr = cluster.node(&leader).client_addr();
    let mut writer = LineClient::connect(&addr);
    let value = "x".repeat(20_000);
    let batch: String = (0..5).map(|i| format!("SET big{i} {value}\n")).collect();
    writer.send_raw(batch.as_bytes());
    // Any further request, even a PING on another connection, is refused at
    // once instead of buffered.
    let mut other = LineClient::connect(&addr);
    let refused = wait_for("ERR BUSY", LEADER_WAIT, || {
        let reply = other.cmd("PING");
        reply.starts_with("ERR BUSY").then_some(reply)
    });
    assert!(refused.contains("retry later"), "{refused}");
    set_followers_paused(&cluster, &leader, false);
    for _ in 0..5 {
        assert_eq!(writer.read_line().as_deref(), Some(&b"OK"[..]));
    }
    assert_eq!(other.cmd("PING"), "PONG");
}

#[test]
fn an_over_long_line_sent_in_chunks_gets_its_error_before_the_close() {
    let cluster = TestCluster::launch(1, &["--max-line-bytes", "1024"]);
    cluster.wait_for_leader(LEADER_WAIT);
    let mut stream = TcpStream::connect(cluster.nodes[0].client_addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"PING\n").unwrap();
    // 4 MiB of one line, in 64 KiB chunks; the server refuses after 1 KiB.
    let chunk = vec![b'a'; 64 * 1024];
    for _ in 0..64 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert_eq!(reply, "PONG\nERR line too long\n");
}

#[test]
fn running_out_of_file_descriptors_is_survived() {
    // The node may hold 128 files but is told to take 1,000 connections:
    // accepts fail with EMFILE. It must log, retry, keep its WAL working and
    // serve new clients once connections close.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let cluster = TestCluster::launch_wrapped(
        1,
        &["--max-connections", "1000"],
        &["prlimit", "--nofile=128:128"],
    );
    cluster.wait_for_leader(LEADER_WAIT);
    let addr = cluster.nodes[0].client_addr();
    let mut writer = LineClient::connect(&addr);
    assert_eq!(writer.cmd("SET before 1"), "OK");
    // (Once the listen backlog is full too, a connect waits: stop there.)
    let sock: std::net::SocketAddr = addr.parse().unwrap();
    let flood: Vec<TcpStream> = (0..300)
        .map_while(|_| TcpStream::connect_timeout(&sock, Duration::from_millis(200)).ok())
        .collect();
    assert!(flood.len() > 128, "only {} connections", flood.len());
    let log = wait_for("accept failures in the log", LEADER_WAIT, || {
        let log = std::fs::read_to_string(&cluster.nodes[0].log_path).ok()?;
        log.contains("accept failed").then_some(log)
    });
    assert!(log.contains("Too many open files"), "{log}");
    // Writes (WAL appends, fsyncs, hard state) need no new file.
    for i in 0..20 {
        assert_eq!(writer.cmd(&format!("SET during:{i} x")), "OK");
    }
    drop(flood);
    let mut fresh = wait_for("a new client after the flood", LEADER_WAIT, || {
        let mut c = LineClient::try_connect(&addr)?;
        (c.try_cmd("GET during:19")? == "VALUE x").then_some(c)
    });
    assert_eq!(fresh.cmd("SET after 1"), "OK");
    let status = cluster.status("node1").unwrap();
    assert!(status.line.contains("disk=ok"), "{}", status.line);
}

#[test]
fn json_logs_are_one_object_a_line() {
    let cluster = TestCluster::launch(1, &["--log-format", "json"]);
    cluster.wait_for_leader(LEADER_WAIT);
    let log = wait_for("the leader's log line", LEADER_WAIT, || {
        let log = std::fs::read_to_string(&cluster.nodes[0].log_path).ok()?;
        log.contains("role changed").then_some(log)
    });
    // The harness writes its own banner line; every line the node wrote is JSON.
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('{')).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("\"role\":\"leader\"")),
        "{log}"
    );
}

/// The thread of `pid` named `name` is blocked in `write(2, ...)`: writing to
/// its stderr (from `/proc/<pid>/task/<tid>/syscall`: number 1, first argument 2).
fn blocked_writing_stderr(pid: u32, name: &str) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        let read = |file: &str| std::fs::read_to_string(task.path().join(file)).unwrap_or_default();
        read("comm").trim() == name && read("syscall").starts_with("1 0x2 ")
    })
}

#[test]
fn a_stderr_nobody_reads_does_not_stop_the_nodes() {
    // Every node's stderr is one FIFO this test holds open and never reads:
    // once its 64 KiB fill, every write to it blocks.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("stderr");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let script = format!("exec \"$0\" \"$@\" 2>>'{}'", fifo.display());
    // h2 logs every frame between the nodes at trace: the FIFO fills at once.
    let cluster =
        TestCluster::launch_wrapped(3, &["--log", "debug,h2=trace"], &["sh", "-c", &script]);
    cluster.wait_for_leader(LEADER_WAIT);
    let pids: Vec<u32> = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
    assert_eq!(pids.len(), 3);
    let mut written = 0;
    wait_for(
        "the nodes' log threads to block on the full FIFO",
        LEADER_WAIT,
        || {
            written += 1;
            assert_eq!(set_via_leader(&cluster, &format!("k{written}"), "v"), "OK");
            pids.iter()
                .all(|&pid| blocked_writing_stderr(pid, "titanstore-log"))
                .then_some(())
        },
    );
    // With their log output stuck, the nodes go on agreeing and answering:
    // writes commit, and every node serves a linearizable read of the last.
    for i in 0..200 {
        assert_eq!(set_via_leader(&cluster, &format!("after{i}"), "v"), "OK");
    }
    for node in &cluster.nodes {
        let mut client = LineClient::connect(&node.client_addr());
        let reply = wait_for("a linearizable read on every node", LEADER_WAIT, || {
            let reply = client.try_cmd("GET after199")?;
            (!reply.starts_with("ERR NOT_LEADER")).then_some(reply)
        });
        assert_eq!(reply, "VALUE v", "{}", node.id);
    }
    assert!(
        pids.iter()
            .all(|&pid| blocked_writing_stderr(pid, "titanstore-log"))
    );
}
