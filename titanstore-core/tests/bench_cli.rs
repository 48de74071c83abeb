//! `titanstore-bench` against a real one-node cluster on loopback: its JSON
//! report, stale reads, and refusals of bad arguments; `--target etcd`
//! against a fake etcd JSON gateway (no etcd needed); `--floor`. No timing is
//! asserted.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

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

/// What the fake gateway saw.
#[derive(Default)]
struct Seen {
    connections: usize,
    puts: usize,
    ranges: usize,
    serializable: usize,
    /// Requests that are not what etcd's gateway expects.
    bad: Vec<String>,
}

/// Checks one request and picks the reply: puts succeed; linearizable
/// ranges fail with a 503, serializable ones with a 200 whose body is an
/// error, as the gateway's error bodies look.
fn gateway_reply(path: &str, body: &[u8], value_size: usize, seen: &mut Seen) -> String {
    let mut bad = |why: String| seen.bad.push(why);
    let json: serde_json::Value = match serde_json::from_slice(body) {
        Ok(json) => json,
        Err(err) => {
            bad(format!("body is not JSON: {err}"));
            serde_json::Value::Null
        }
    };
    let decode = |field: &str| {
        json[field]
            .as_str()
            .and_then(|text| STANDARD.decode(text).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
    };
    match decode("key") {
        Some(key) if key.starts_with('k') && key[1..].parse::<u64>().is_ok() => {}
        other => bad(format!("{path}: key {other:?} is not base64 of k<n>")),
    }
    let ok = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    match path {
        "/v3/kv/put" => {
            seen.puts += 1;
            if decode("value") != Some("x".repeat(value_size)) {
                seen.bad.push(format!(
                    "put value {:?} is not base64 of x*{value_size}",
                    json["value"]
                ));
            }
            ok(r#"{"header":{"revision":"2"}}"#)
        }
        "/v3/kv/range" if json["serializable"] == true => {
            seen.ranges += 1;
            seen.serializable += 1;
            ok(r#"{"error":"etcdserver: request timed out","code":14}"#)
        }
        "/v3/kv/range" => {
            seen.ranges += 1;
            let body = r#"{"error":"etcdserver: leader changed","code":14}"#;
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
        other => {
            seen.bad.push(format!("unexpected path {other}"));
            "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found".to_owned()
        }
    }
}

/// Serves one keep-alive connection until the client closes it.
fn serve_gateway(stream: TcpStream, value_size: usize, seen: &Mutex<Seen>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let request = line.trim_end().to_owned();
        let (mut length, mut host) = (None, false);
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
            host |= name.eq_ignore_ascii_case("host");
        }
        let mut body = vec![0; length.unwrap_or(0)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let reply = {
            let mut seen = seen.lock().unwrap();
            if !host || length.is_none() {
                seen.bad
                    .push(format!("{request}: no Host or Content-Length"));
            }
            match request
                .strip_prefix("POST ")
                .and_then(|r| r.strip_suffix(" HTTP/1.1"))
            {
                Some(path) => gateway_reply(path, &body, value_size, &mut seen),
                None => {
                    seen.bad.push(format!("bad request line {request:?}"));
                    return;
                }
            }
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A fake etcd JSON gateway on loopback; returns its address.
fn fake_gateway(value_size: usize, seen: Arc<Mutex<Seen>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            seen.lock().unwrap().connections += 1;
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || serve_gateway(stream, value_size, &seen));
        }
    });
    addr
}

#[test]
fn bench_loads_the_etcd_gateway_and_counts_its_errors() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let addr = fake_gateway(10, Arc::clone(&seen));
    let run = |extra: &[&str]| {
        let common = ["--target", "etcd", "--addrs", &addr, "--duration", "0.3"];
        let (code, out, err) =
            bench(&[&common[..], &["--value-size", "10", "--json"], extra].concat());
        assert_eq!(code, 0, "{out}{err}");
        let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(report["target"], "etcd", "{out}");
        assert!(report["ops"].as_u64().unwrap() > 0, "{out}");
        report
    };

    // 2 clients x pipeline 3: 6 keep-alive connections, one request in flight on each.
    let report = run(&["--clients", "2", "--pipeline", "3"]);
    assert_eq!(report["errors"], 0, "puts succeed: {report}");
    assert_eq!(report["connections"], 6);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.connections, 6, "one connection each, kept alive");
        assert!(seen.puts > 0 && seen.ranges == 0);
    }

    // A 503 and a 200 with an error body are both errors.
    let report = run(&["--read-ratio", "1"]);
    assert_eq!(report["errors"], report["ops"], "{report}");
    let report = run(&[
        "--read-ratio",
        "1",
        "--stale-reads",
        "--pipeline",
        "4",
        "--http-pipelining",
    ]);
    assert_eq!(report["errors"], report["ops"], "{report}");
    assert_eq!(report["connections"], 1, "pipelined on one connection");

    let seen = seen.lock().unwrap();
    assert!(seen.ranges > seen.serializable && seen.serializable > 0);
    assert!(seen.bad.is_empty(), "{:?}", seen.bad);
    drop(seen);

    let (code, _, err) = bench(&["--target", "etcd", "--addrs", &addr, "--req"]);
    assert_eq!(code, 2, "--req has no etcd meaning: {err}");
}

#[test]
fn floor_reports_fdatasync_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = bench(&[
        "--floor",
        "--json",
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let ms = |name: &str| report[name].as_f64().unwrap();
    assert!(
        0.0 < ms("fdatasync_p50_ms") && ms("fdatasync_p50_ms") <= ms("fdatasync_p99_ms"),
        "{out}"
    );
    assert!(
        0.0 < ms("rtt_p50_ms") && ms("rtt_p50_ms") <= ms("rtt_p99_ms"),
        "{out}"
    );
    let floor = 2.0 * ms("rtt_p50_ms") + ms("fdatasync_p50_ms");
    assert!(
        (ms("replicated_write_floor_ms") - floor).abs() < 1e-6,
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "the scratch file is removed"
    );

    let (code, _, err) = bench(&["--floor", "--data-dir", "/nonexistent/titanstore-bench"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a directory"), "{err}");
}
