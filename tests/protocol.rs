//! Every row of the client protocol table, and each kind of bad input, over a
//! real socket to a real single-node `titanstore-server`.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{LineClient, TestCluster, wait_for};

fn single_node() -> (TestCluster, LineClient) {
    let cluster = TestCluster::launch(1, &["--max-line-bytes", "64"]);
    cluster.wait_for_leader(Duration::from_secs(10));
    let client = cluster.client("node1");
    (cluster, client)
}

#[test]
fn table_rows_and_values_byte_for_byte() {
    let (_cluster, mut c) = single_node();
    assert_eq!(c.cmd("PING"), "PONG");
    assert_eq!(c.cmd("GET missing"), "NOT_FOUND");
    assert_eq!(c.cmd("SGET missing"), "NOT_FOUND");
    assert_eq!(c.cmd("SET user:42 {\"name\":\"zen\"}"), "OK");
    assert_eq!(c.cmd("GET user:42"), "VALUE {\"name\":\"zen\"}");
    assert_eq!(c.cmd("SGET user:42"), "VALUE {\"name\":\"zen\"}");
    assert_eq!(c.cmd("SET spaced   lead inner  trail  "), "OK");
    assert_eq!(c.cmd("GET spaced"), "VALUE   lead inner  trail  ");
    assert_eq!(c.cmd("SET empty "), "OK");
    assert_eq!(c.cmd("GET empty"), "VALUE ");
    assert_eq!(c.cmd("SET crlf v\r"), "OK");
    assert_eq!(c.cmd("GET crlf"), "VALUE v");
    assert_eq!(c.cmd("DELETE user:42"), "OK");
    assert_eq!(c.cmd("GET user:42"), "NOT_FOUND");
    assert_eq!(c.cmd("DELETE never-existed"), "OK");
    assert_eq!(c.cmd("set lower v"), "OK");
    assert_eq!(c.cmd("gEt lower"), "VALUE v");
    let status = c.cmd("STATUS");
    assert!(
        status.starts_with("STATUS id=node1 role=leader "),
        "{status}"
    );
    assert!(status.contains(" leader=node1 "), "{status}");
}

#[test]
fn non_utf8_bytes_are_stored_and_returned_exactly() {
    let (_cluster, mut c) = single_node();
    c.send_raw(b"SET bin \xff\xfe\x00 x\xc3\x28\n");
    assert_eq!(c.read_line().unwrap(), b"OK");
    c.send_raw(b"GET bin\n");
    assert_eq!(c.read_line().unwrap(), b"VALUE \xff\xfe\x00 x\xc3\x28");
    c.send_raw(b"SET k\xe9y v\n");
    assert_eq!(c.read_line().unwrap(), b"OK");
    c.send_raw(b"GET k\xe9y\n");
    assert_eq!(c.read_line().unwrap(), b"VALUE v");
}

#[test]
fn bad_input_gets_err_and_connection_stays_usable() {
    let (_cluster, mut c) = single_node();
    for (line, reply) in [
        ("FROB x", "ERR unknown command 'FROB'"),
        ("SET k", "ERR wrong number of arguments for 'SET'"),
        ("SET", "ERR wrong number of arguments for 'SET'"),
        ("GET", "ERR wrong number of arguments for 'GET'"),
        ("GET a b", "ERR wrong number of arguments for 'GET'"),
        ("DELETE", "ERR wrong number of arguments for 'DELETE'"),
        ("GET ", "ERR empty key"),
        ("SET  v", "ERR empty key"),
    ] {
        assert_eq!(c.cmd(line), reply, "reply to {line:?}");
    }
    // Empty lines get no reply at all: the next reply belongs to PING.
    c.send_raw(b"\n\r\nPING\n");
    assert_eq!(c.read_line().unwrap(), b"PONG");
}

#[test]
fn too_long_line_is_refused_and_closed() {
    let (_cluster, mut c) = single_node();
    assert_eq!(c.cmd("PING"), "PONG");
    let long = format!("SET k {}\n", "x".repeat(200));
    c.send_raw(long.as_bytes());
    assert_eq!(c.read_line().unwrap(), b"ERR line too long");
    assert!(c.is_closed());
}

#[test]
fn pipelined_requests_reply_in_order() {
    let (_cluster, mut c) = single_node();
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(&format!("SET k{i} v{i}\nGET k{i}\n"));
    }
    batch.push_str("PING\n");
    c.send_raw(batch.as_bytes());
    for i in 0..200 {
        assert_eq!(c.read_line().unwrap(), b"OK");
        assert_eq!(c.read_line().unwrap(), format!("VALUE v{i}").as_bytes());
    }
    assert_eq!(c.read_line().unwrap(), b"PONG");
}

#[test]
fn last_line_without_newline_is_answered() {
    let (_cluster, mut c) = single_node();
    c.send_raw(b"PING");
    c.writer_shutdown();
    assert_eq!(c.read_line().unwrap(), b"PONG");
}

/// Release 2 rows: revisions, compare-and-set, scans, exactly-once writes,
/// and each one's bad input, over a real socket.
#[test]
fn revisions_cas_scan_and_req() {
    let (_cluster, mut c) = single_node();
    assert_eq!(c.cmd("GETREV k"), "NOT_FOUND");
    let ok_rev = |reply: String| -> u64 {
        let rev = reply
            .strip_prefix("OK ")
            .unwrap_or_else(|| panic!("{reply}"));
        rev.parse().unwrap()
    };
    let r1 = ok_rev(c.cmd("CAS k 0 first value"));
    assert_eq!(c.cmd("GETREV k"), format!("VALUE {r1} first value"));
    assert_eq!(c.cmd("CAS k 0 again"), format!("ERR CONFLICT {r1}"));
    let r2 = ok_rev(c.cmd(&format!("CAS k {r1} second")));
    assert!(r2 > r1);
    assert_eq!(c.cmd(&format!("CAD k {r1}")), format!("ERR CONFLICT {r2}"));
    assert_eq!(c.cmd("CAD missing 5"), "ERR CONFLICT 0");
    assert!(ok_rev(c.cmd(&format!("CAD k {r2}"))) > r2);
    assert_eq!(c.cmd("GETREV k"), "NOT_FOUND");
    // SET and DELETE still answer plain OK.
    for k in ["d/a", "d/b", "d/c", "e"] {
        assert_eq!(c.cmd(&format!("SET {k} v {k}")), "OK");
    }
    let header = c.cmd("SCAN 2 d/");
    let words: Vec<&str> = header.split(' ').collect();
    assert_eq!(
        (words[0], words[1], words[3]),
        ("KEYS", "2", "1"),
        "{header}"
    );
    let first = String::from_utf8(c.read_line().unwrap()).unwrap();
    assert!(
        first.starts_with("d/a ") && first.ends_with(" v d/a"),
        "{first}"
    );
    let second = String::from_utf8(c.read_line().unwrap()).unwrap();
    assert!(second.starts_with("d/b "), "{second}");
    let header = c.cmd("SCAN 10 * d/b");
    assert!(
        header.starts_with("KEYS 2 ") && header.ends_with(" 0"),
        "{header}"
    );
    assert!(c.read_line().unwrap().starts_with(b"d/c "));
    assert!(c.read_line().unwrap().starts_with(b"e "));
    // Exactly once: the retry gets the first answer and changes nothing.
    let r = ok_rev(c.cmd("REQ app-1 1 CAS n 0 1"));
    assert_eq!(c.cmd("REQ app-1 1 CAS n 0 1"), format!("OK {r}"));
    assert_eq!(c.cmd("CAS n 0 1"), format!("ERR CONFLICT {r}"));
    assert_eq!(c.cmd("REQ app-1 2 SET n 2"), "OK");
    assert_eq!(c.cmd("REQ app-1 2 SET n 3"), "OK");
    assert_eq!(c.cmd("GET n"), "VALUE 2");
    assert_eq!(c.cmd("REQ fresh 5000 SET n 4"), "ERR SESSION_EXPIRED");
    for (line, reason) in [
        ("CAS k x v", "ERR invalid revision 'x'"),
        (
            "CAD k 0",
            "ERR CAD needs the key's current revision (0 is never one)",
        ),
        ("SCAN 0", "ERR limit must be between 1 and 10000"),
        ("SCAN 20000 a", "ERR limit must be between 1 and 10000"),
        ("SCAN x", "ERR invalid limit 'x'"),
        ("WATCH abc", "ERR invalid revision 'abc'"),
        ("REQ c 1 GET k", "ERR unknown REQ subcommand 'GET'"),
        ("GETREV", "ERR wrong number of arguments for 'GETREV'"),
    ] {
        assert_eq!(c.cmd(line), reason, "{line}");
    }
    assert_eq!(c.cmd("PING"), "PONG", "the connection stays usable");
}

/// `WATCH` turns a connection into a stream: history first, then live
/// changes, `PROGRESS` when idle.
#[test]
fn watch_streams_history_then_live_changes() {
    let (cluster, mut c) = single_node();
    assert_eq!(c.cmd("SET w/a 1"), "OK");
    assert_eq!(c.cmd("SET other x"), "OK");
    assert_eq!(c.cmd("DELETE w/a"), "OK");
    let mut w = cluster.client("node1");
    let watching = w.cmd("WATCH 1 w/");
    assert_eq!(watching, "WATCHING 1");
    let line = |w: &mut harness::LineClient| String::from_utf8(w.read_line().unwrap()).unwrap();
    let set = line(&mut w);
    assert!(
        set.starts_with("EVENT ") && set.ends_with(" SET w/a 1"),
        "{set}"
    );
    let del = line(&mut w);
    assert!(del.ends_with(" DEL w/a"), "{del}");
    assert_eq!(c.cmd("SET w/b two words"), "OK");
    let live = line(&mut w);
    assert!(live.ends_with(" SET w/b two words"), "{live}");
    // Idle: progress within about a second.
    let progress = line(&mut w);
    assert!(progress.starts_with("PROGRESS "), "{progress}");
    // A node that never compacted holds everything; rev 0 means from now.
    let mut now = cluster.client("node1");
    assert!(now.cmd("WATCH 0").starts_with("WATCHING "));
}

/// History a node no longer holds (before its snapshot, after a restart) is
/// `ERR COMPACTED <oldest>` on the wire; the connection stays usable and a
/// watch from `<oldest>` streams from there.
#[test]
fn a_watch_before_the_oldest_held_revision_gets_err_compacted() {
    let mut cluster = TestCluster::launch(1, &["--snapshot-threshold", "10"]);
    cluster.wait_for_leader(Duration::from_secs(10));
    let mut c = cluster.client("node1");
    for i in 0..30 {
        assert_eq!(c.cmd(&format!("SET c/{i} v{i}")), "OK");
    }
    wait_for("a snapshot", Duration::from_secs(10), || {
        cluster.status("node1").filter(|s| s.snapshot_index >= 10)
    });
    cluster.stop("node1");
    cluster.start("node1");
    cluster.wait_for_leader(Duration::from_secs(10));
    let mut w = cluster.client("node1");
    let refused = w.cmd("WATCH 1 c/");
    let oldest: u64 = refused
        .strip_prefix("ERR COMPACTED ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{refused}"));
    assert!(oldest > 1, "{refused}");
    assert_eq!(w.cmd("PING"), "PONG", "the connection goes on");
    assert_eq!(
        w.cmd(&format!("WATCH {oldest} c/")),
        format!("WATCHING {oldest}")
    );
}
