//! Every row of the client protocol table, and each kind of bad input, over a
//! real socket to a real single-node `titanstore-server`.
#![allow(clippy::unwrap_used)]

mod harness;

use std::time::Duration;

use harness::{LineClient, TestCluster};

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
