//! `titanstore-ctl` against a real cluster: tables, `--json`, and exit codes
//! a shell script can rely on (0 done, 1 refused, 2 usage, 3 unreachable).
#![allow(clippy::unwrap_used)]

mod harness;

use std::process::Command;
use std::time::Duration;

use harness::TestCluster;

const CTL: &str = env!("CARGO_BIN_EXE_titanstore-test-ctl");

fn ctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(CTL)
        .arg("--endpoints")
        .arg(endpoints)
        .arg("--timeout")
        .arg("5")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctl_reads_writes_administers_and_reports_health() {
    let mut cluster = TestCluster::launch(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.client_addr()).collect();
    let eps = all.join(",");

    let (code, out, err) = ctl(&eps, &["set", "user:1", "hello world"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = ctl(&eps, &["get", "user:1"]);
    assert_eq!(code, 0);
    assert!(out.contains("hello world"), "{out}");

    let (code, out, _) = ctl(&eps, &["--json", "members"]);
    assert_eq!(code, 0);
    let members: serde_json::Value = serde_json::from_str(&out).unwrap();
    let members = members.as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["role"] == "voter"), "{out}");

    let (code, out, _) = ctl(&eps, &["status"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().filter(|l| l.contains("127.0.0.1:")).count(),
        3,
        "{out}"
    );
    assert!(out.contains("leader"), "{out}");

    // A CAS at the wrong revision is refused with exit code 1.
    let (code, _, err) = ctl(&eps, &["cas", "user:1", "999999", "x"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("conflict"), "{err}");

    let target = cluster.other_than(&leader);
    let (code, out, err) = ctl(&eps, &["transfer", &target]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(10)), target);

    let (code, _, _) = ctl(&eps, &["check"]);
    assert_eq!(code, 0);
    let (code, _, err) = ctl(&eps, &["member", "remove", "nobody"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = ctl(&eps, &["frobnicate"]);
    assert_eq!(code, 2);

    // With a single node left, nobody knows a leader: check fails.
    let ids: Vec<String> = cluster.nodes.iter().map(|n| n.id.clone()).collect();
    for id in &ids[1..] {
        cluster.kill(id);
    }
    let alone = cluster.node(&ids[0]).client_addr();
    let until = std::time::Instant::now() + Duration::from_secs(10);
    let mut code = 0;
    while std::time::Instant::now() < until {
        code = ctl(&alone, &["check"]).0;
        if code == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(code, 1, "check passed without a leader");
    let out = Command::new(CTL)
        .args(["--endpoints", "127.0.0.1:1", "--timeout", "0.3", "get", "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}
