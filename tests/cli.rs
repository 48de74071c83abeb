//! Bad command lines get a clear message and exit code 2, never a panic.

mod harness;

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(harness::BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for (args, needle) in [
        (vec!["--port", "5001"], "--id"),
        (vec!["--id", "n1", "--port", "notaport"], "notaport"),
        (
            vec!["--id", "n1", "--peers", "n2:localhost:5002"],
            "id:host:raft_port:client_port",
        ),
        (
            vec!["--id", "n1", "--peers", "n1:localhost:5002:6002"],
            "itself",
        ),
        (
            vec!["--id", "n1", "--peers", "n2:h:5002:6002,n2:h:5003:6003"],
            "twice",
        ),
        (vec!["--id", "n1", "--peers", "n2:h:0:6002"], "not a port"),
        (
            vec!["--id", "n1", "--election-timeout-min-ms", "300"],
            "election-timeout",
        ),
        (vec!["--id", "n1", "--heartbeat-ms", "500"], "heartbeat"),
        (vec!["--id", "n1", "--bogus"], "--bogus"),
        (vec!["--id", "n1", "--read-mode", "eventual"], "eventual"),
        (
            vec![
                "--id",
                "n1",
                "--read-mode",
                "lease",
                "--lease-drift-percent",
                "100",
            ],
            "--read-mode lease",
        ),
    ] {
        let (code, stderr) = run(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn help_exits_0() {
    let (code, _) = run(&["--help"]);
    assert_eq!(code, 0);
}

#[test]
fn port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = taken
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_default()
        .to_string();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("d");
    let (code, stderr) = run(&[
        "--id",
        "n1",
        "--port",
        &port,
        "--client-port",
        "0",
        "--data-dir",
        data.to_str().unwrap_or_default(),
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot listen"), "{stderr}");
}
