//! `titanstore-bench` against a real one-node cluster on loopback: its JSON
//! report, stale reads, and refusals of bad arguments. No timing is asserted.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_titanstore-server");
const BENCH: &str = env!("CARGO_BIN_EXE_titanstore-bench");

/// The node process, killed when dropped (also when the test fails).
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn status(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"STATUS\n").ok()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}

fn bench(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BENCH).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_reports_json_and_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, client) = (free_port(), free_port());
    let addr = format!("127.0.0.1:{client}");
    let _node = Node(
        Command::new(SERVER)
            .args(["--id", "node1", "--port", &raft.to_string()])
            .args(["--client-port", &client.to_string()])
            .args(["--advertise-client-addr", &addr, "--log", "warn"])
            .arg("--data-dir")
            .arg(dir.path().join("node1"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !status(&addr).is_some_and(|s| s.contains(" role=leader ")) {
        assert!(Instant::now() < deadline, "the node never led");
        std::thread::sleep(Duration::from_millis(50));
    }

    let common = ["--addr", &addr, "--duration", "0.5", "--json"];
    let (code, out, err) = bench(&[&common[..], &["--clients", "4", "--req"]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(report["ops"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(report["errors"], 0, "{out}");
    assert_eq!(report["clients"], 4);
    let ms = |name: &str| report[name].as_f64().unwrap();
    assert!(
        0.0 < ms("p50_ms") && ms("p50_ms") <= ms("p99_ms") && ms("p99_ms") <= ms("max_ms"),
        "{out}"
    );

    let reads = ["--read-ratio", "1", "--stale-reads", "--pipeline", "8"];
    let (code, out, err) = bench(&[&common[..], &reads[..]].concat());
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["stale_reads"], true);
    assert_eq!(
        report["errors"], 0,
        "SGET of absent keys is not an error: {out}"
    );
    assert!(report["ops"].as_u64().unwrap() > 0, "{out}");

    for bad in [
        &["--clients", "0"][..],
        &["--read-ratio", "1.5"],
        &["--duration", "-1"],
        &["--json", "--csv"],
    ] {
        let (code, out, err) = bench(&[&["--addr", &addr][..], bad].concat());
        assert_eq!(code, 2, "{bad:?}: {out}{err}");
        assert!(!err.is_empty(), "{bad:?} says why");
    }
}
