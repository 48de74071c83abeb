//! Mutual TLS between nodes, with certificates made in the test by Debian's
//! `openssl`: a cluster whose nodes hold certificates of one CA works as
//! without TLS; a node whose certificate another CA signed is refused at
//! the handshake (both ways) and the cluster goes on without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::{LineClient, TestCluster, set_via_leader, wait_for};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian's openssl package) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` and one node certificate it signed (for 127.0.0.1 and
/// localhost, usable as server and client); returns (cert, key, ca) paths.
fn make_certs(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let mut args = vec!["req", "-x509"];
    args.extend(ec);
    args.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "2",
        "-subj",
        "/CN=titanstore test CA",
    ]);
    openssl(dir, &args);
    let key = format!("{name}-node.key");
    let csr = format!("{name}-node.csr");
    let cert = format!("{name}-node.pem");
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=titanstore node",
    ]);
    openssl(dir, &args);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &cert,
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
    (dir.join(cert), dir.join(key), dir.join(ca))
}

fn tls_args(cert: &Path, key: &Path, ca: &Path) -> Vec<String> {
    [
        "--peer-tls-cert",
        cert.to_str().unwrap(),
        "--peer-tls-key",
        key.to_str().unwrap(),
        "--peer-tls-ca",
        ca.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_tls_cluster_works_and_refuses_a_peer_of_another_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, ca) = make_certs(certs.path(), "ours");
    let (rogue_cert, rogue_key, rogue_ca) = make_certs(certs.path(), "rogue");
    let args = tls_args(&cert, &key, &ca);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cluster = TestCluster::launch(3, &args);
    let leader = cluster.wait_for_leader(Duration::from_secs(10));
    assert_eq!(set_via_leader(&cluster, "over-tls", "yes"), "OK");
    // Replicated to every node over TLS.
    for node in ["node1", "node2", "node3"] {
        let addr = cluster.node(node).client_addr();
        wait_for("the write on every node", Duration::from_secs(10), || {
            (LineClient::connect(&addr).cmd("GET over-tls") == "VALUE yes").then_some(())
        });
    }

    // A follower restarted with a certificate of another CA: the handshakes
    // fail both ways, it never hears a leader, the other two go on.
    let rogue = cluster.other_than(&leader);
    cluster.kill(&rogue);
    cluster
        .node_args
        .insert(rogue.clone(), tls_args(&rogue_cert, &rogue_key, &rogue_ca));
    cluster.start(&rogue);
    let mut to_leader = LineClient::connect(&cluster.node(&leader).client_addr());
    assert_eq!(to_leader.cmd("SET without-rogue 1"), "OK");
    let log = wait_for(
        "a refused handshake in the log",
        Duration::from_secs(10),
        || {
            let log = std::fs::read_to_string(&cluster.node(&rogue).log_path).ok()?;
            log.contains("cannot connect to peer over TLS")
                .then_some(log)
        },
    );
    assert!(log.contains("invalid peer certificate"), "{log}");
    let status = cluster
        .status(&rogue)
        .expect("the rogue node keeps running");
    assert_ne!(status.leader, leader, "{}", status.line);
    let mut c = LineClient::connect(&cluster.node(&rogue).client_addr());
    assert!(
        c.cmd("GET without-rogue").starts_with("ERR"),
        "the rogue node got data"
    );

    // Given the right certificate again, it catches up.
    cluster.kill(&rogue);
    cluster.node_args.remove(&rogue);
    cluster.start(&rogue);
    let addr = cluster.node(&rogue).client_addr();
    wait_for("the node to catch up", Duration::from_secs(10), || {
        (LineClient::connect(&addr).cmd("GET without-rogue") == "VALUE 1").then_some(())
    });
}

#[test]
fn tls_flags_come_together_and_bad_files_are_clear_errors() {
    let out = Command::new(harness::BIN)
        .args(["--id", "n1", "--peer-tls-cert", "/nonexistent.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--peer-tls-key") || stderr.contains("--peer-tls-ca"),
        "{stderr}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(harness::BIN)
        .args([
            "--id",
            "n1",
            "--port",
            "0",
            "--client-port",
            "0",
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
            "--peer-tls-cert",
            "/nonexistent.pem",
            "--peer-tls-key",
            "/nonexistent.key",
            "--peer-tls-ca",
            "/nonexistent-ca.pem",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--peer-tls-cert /nonexistent.pem"),
        "{stderr}"
    );
}
