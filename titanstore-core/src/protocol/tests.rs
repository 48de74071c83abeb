#![allow(clippy::unwrap_used)]

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use super::*;

fn parse(line: &str) -> Result<Option<Request>, ParseError> {
    Request::parse(line.as_bytes())
}

fn set(key: &str, value: &[u8]) -> Request {
    Request::Set(Set {
        key: key.into(),
        value: value.to_vec(),
    })
}

#[test]
fn set_value_is_rest_of_line_byte_for_byte() {
    assert_eq!(parse("SET k v").unwrap(), Some(set("k", b"v")));
    assert_eq!(parse("SET k  a b  ").unwrap(), Some(set("k", b" a b  ")));
    assert_eq!(parse("SET k ").unwrap(), Some(set("k", b"")));
    assert_eq!(
        parse("set k {\"a\": 1}\r").unwrap(),
        Some(set("k", b"{\"a\": 1}"))
    );
    let raw = Request::parse(b"SET k \xff\xfe x").unwrap();
    assert_eq!(raw, Some(set("k", b"\xff\xfe x")));
}

#[test]
fn commands_are_case_insensitive() {
    for line in ["get k", "GeT k", "GET k"] {
        assert!(matches!(
            parse(line).unwrap(),
            Some(Request::Get(Get { stale: false, .. }))
        ));
    }
    assert!(matches!(
        parse("sget k").unwrap(),
        Some(Request::Get(Get { stale: true, .. }))
    ));
    assert_eq!(parse("ping").unwrap(), Some(Request::Ping(Ping)));
    assert_eq!(parse("Status").unwrap(), Some(Request::Status(StatusCmd)));
    assert_eq!(
        parse("delete k").unwrap(),
        Some(Request::Delete(Delete { key: b"k".to_vec() }))
    );
}

#[test]
fn empty_lines_get_no_reply() {
    assert_eq!(parse("").unwrap(), None);
    assert_eq!(parse("\r").unwrap(), None);
}

#[test]
fn malformed_lines_are_errors() {
    assert_eq!(
        parse("FOO k"),
        Err(ParseError::UnknownCommand("FOO".into()))
    );
    assert_eq!(parse("SET k"), Err(ParseError::WrongArgs("SET")));
    assert_eq!(parse("SET"), Err(ParseError::WrongArgs("SET")));
    assert_eq!(parse("GET"), Err(ParseError::WrongArgs("GET")));
    assert_eq!(parse("GET a b"), Err(ParseError::WrongArgs("GET")));
    assert_eq!(parse("GET "), Err(ParseError::EmptyKey));
    assert_eq!(parse("SET  v"), Err(ParseError::EmptyKey));
    assert_eq!(parse("DELETE"), Err(ParseError::WrongArgs("DELETE")));
    assert_eq!(parse("PING x"), Err(ParseError::WrongArgs("PING")));
    assert_eq!(parse("GET a\tb"), Err(ParseError::KeyWhitespace));
}

#[test]
fn requests_round_trip_through_encode() {
    for request in [
        set("k", b" spaced value "),
        set("k", b""),
        Request::Get(Get {
            key: b"k".to_vec(),
            stale: true,
        }),
        Request::Delete(Delete { key: b"k".to_vec() }),
        Request::Ping(Ping),
    ] {
        let mut line = Vec::new();
        request.encode(&mut line);
        assert_eq!(line.pop(), Some(b'\n'));
        assert_eq!(Request::parse(&line).unwrap(), Some(request));
    }
}

#[test]
fn replies_round_trip() {
    for reply in [
        Reply::Value(b" v a l ".to_vec()),
        Reply::Value(Vec::new()),
        Reply::NotFound,
        Reply::Ok,
        Reply::Pong,
        Reply::Status(vec![
            ("id".into(), "node1".into()),
            ("term".into(), "3".into()),
        ]),
        Reply::NotLeader("localhost:6002".into()),
        Reply::NoLeader,
        Reply::Dropped("leader changed".into()),
        Reply::Unknown("timed out".into()),
        Reply::Error("unknown command 'X'".into()),
    ] {
        let mut line = Vec::new();
        reply.encode(&mut line);
        assert_eq!(line.pop(), Some(b'\n'));
        assert_eq!(Reply::parse(&line).unwrap(), reply);
    }
}

#[test]
fn codec_splits_lines_and_bounds_memory() {
    let mut codec = LineCodec::new(8);
    let mut buf = BytesMut::from(&b"PING\nGET k\nSET"[..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(b"PING".to_vec()));
    assert_eq!(codec.decode(&mut buf).unwrap(), Some(b"GET k".to_vec()));
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b" k 12345");
    assert!(matches!(codec.decode(&mut buf), Err(LineError::TooLong)));

    let mut codec = LineCodec::new(8);
    let mut buf = BytesMut::from(&b"PING"[..]);
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), Some(b"PING".to_vec()));
    assert_eq!(codec.decode_eof(&mut buf).unwrap(), None);
}
