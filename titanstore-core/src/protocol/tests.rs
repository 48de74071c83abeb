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
        Reply::NoSpace("disk full".into()),
        Reply::Busy("too many requests".into()),
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

#[test]
fn release_2_commands_parse() {
    assert_eq!(
        parse("getrev k").unwrap(),
        Some(Request::GetRev(GetRev { key: b"k".to_vec() }))
    );
    assert_eq!(
        parse("CAS k 0  spaced ").unwrap(),
        Some(Request::Cas(Cas {
            key: b"k".to_vec(),
            expected: 0,
            value: b" spaced ".to_vec(),
        }))
    );
    assert_eq!(
        parse("cad k 7").unwrap(),
        Some(Request::Cad(Cad {
            key: b"k".to_vec(),
            expected: 7,
        }))
    );
    let scan = |limit, prefix: Option<&str>, after: Option<&str>| {
        Some(Request::Scan(Scan {
            limit,
            prefix: prefix.map(Into::into),
            after: after.map(Into::into),
        }))
    };
    assert_eq!(parse("SCAN 10").unwrap(), scan(10, None, None));
    assert_eq!(
        parse("SCAN 10000 a/").unwrap(),
        scan(10000, Some("a/"), None)
    );
    assert_eq!(parse("scan 5 * a/3").unwrap(), scan(5, None, Some("a/3")));
    assert_eq!(
        parse("SCAN 5 a/ a/3").unwrap(),
        scan(5, Some("a/"), Some("a/3"))
    );
    assert_eq!(
        parse("WATCH 0").unwrap(),
        Some(Request::Watch(Watch {
            from_rev: 0,
            prefix: None
        }))
    );
    assert_eq!(
        parse("watch 12 dir/").unwrap(),
        Some(Request::Watch(Watch {
            from_rev: 12,
            prefix: Some(b"dir/".to_vec())
        }))
    );
    assert_eq!(
        parse("REQ c-1 3 cas k 2 v").unwrap(),
        Some(Request::Req(Req {
            client: b"c-1".to_vec(),
            seq: 3,
            write: Box::new(Request::Cas(Cas {
                key: b"k".to_vec(),
                expected: 2,
                value: b"v".to_vec(),
            })),
        }))
    );
}

#[test]
fn release_2_bad_input() {
    let bad = |line: &str, err: ParseError| assert_eq!(parse(line), Err(err), "{line}");
    bad("GETREV", ParseError::WrongArgs("GETREV"));
    bad("GETREV a b", ParseError::WrongArgs("GETREV"));
    bad("CAS k x v", ParseError::BadNumber("revision", "x".into()));
    bad("CAS k -1 v", ParseError::BadNumber("revision", "-1".into()));
    bad(
        "CAS k 99999999999999999999 v",
        ParseError::BadNumber("revision", "99999999999999999999".into()),
    );
    bad("CAS k 1", ParseError::WrongArgs("CAS"));
    bad("CAD k", ParseError::WrongArgs("CAD"));
    bad("CAD k 0", ParseError::CadZero);
    bad("CAD k 1 x", ParseError::WrongArgs("CAD"));
    bad("CAD k one", ParseError::BadNumber("revision", "one".into()));
    bad("SCAN", ParseError::WrongArgs("SCAN"));
    bad("SCAN 0", ParseError::BadLimit);
    bad("SCAN 20000", ParseError::BadLimit);
    bad("SCAN ten", ParseError::BadNumber("limit", "ten".into()));
    bad("SCAN 5 a b c", ParseError::WrongArgs("SCAN"));
    bad("WATCH", ParseError::WrongArgs("WATCH"));
    bad("WATCH x", ParseError::BadNumber("revision", "x".into()));
    bad("WATCH 1 a b", ParseError::WrongArgs("WATCH"));
    bad(
        "REQ c 1 GET k",
        ParseError::UnknownSubcommand("REQ", "GET".into()),
    );
    bad(
        "REQ c 1 FROB k",
        ParseError::UnknownSubcommand("REQ", "FROB".into()),
    );
    bad(
        "REQ c 1 REQ c 2 SET k v",
        ParseError::UnknownSubcommand("REQ", "REQ".into()),
    );
    bad("REQ c 0 SET k v", ParseError::BadNumber("seq", "0".into()));
    bad("REQ c x SET k v", ParseError::BadNumber("seq", "x".into()));
    bad("REQ c 1 CAD k 0", ParseError::CadZero);
    bad("REQ c 1", ParseError::WrongArgs("REQ"));
    let long = format!("REQ {} 1 SET k v", "c".repeat(65));
    assert_eq!(parse(&long), Err(ParseError::BadClientId));
    assert_eq!(
        Reply::from(ParseError::BadLimit),
        Reply::Error("limit must be between 1 and 10000".into())
    );
}

#[test]
fn release_2_round_trips() {
    for request in [
        Request::GetRev(GetRev { key: b"k".to_vec() }),
        Request::Cas(Cas {
            key: b"k".to_vec(),
            expected: 9,
            value: b" v ".to_vec(),
        }),
        Request::Cad(Cad {
            key: b"k".to_vec(),
            expected: 9,
        }),
        Request::Scan(Scan {
            limit: 3,
            prefix: None,
            after: Some(b"x".to_vec()),
        }),
        Request::Watch(Watch {
            from_rev: 4,
            prefix: Some(b"p".to_vec()),
        }),
        Request::Req(Req {
            client: b"id".to_vec(),
            seq: 8,
            write: Box::new(Request::Delete(Delete { key: b"k".to_vec() })),
        }),
    ] {
        let mut line = Vec::new();
        request.encode(&mut line);
        assert_eq!(line.pop(), Some(b'\n'));
        assert_eq!(Request::parse(&line).unwrap(), Some(request));
    }
    for reply in [
        Reply::OkRev(12),
        Reply::Conflict(0),
        Reply::SessionExpired,
        Reply::Watching(5),
        Reply::Compacted(3),
    ] {
        let mut line = Vec::new();
        reply.encode(&mut line);
        assert_eq!(line.pop(), Some(b'\n'));
        assert_eq!(Reply::parse(&line).unwrap(), reply);
    }
    let mut line = Vec::new();
    Reply::ValueRev(7, b"a b".to_vec()).encode(&mut line);
    assert_eq!(line, b"VALUE 7 a b\n");
    let Reply::Value(v) = Reply::parse(&line[..line.len() - 1]).unwrap() else {
        panic!("not a value");
    };
    assert_eq!(Reply::split_rev(&v), Some((7, b"a b".to_vec())));
    let page = ScanPage {
        revision: 40,
        more: true,
        entries: vec![
            (b"a".to_vec(), 3, b"x y".to_vec()),
            (b"b".to_vec(), 4, Vec::new()),
        ],
    };
    let mut out = Vec::new();
    Reply::Keys(page.clone()).encode(&mut out);
    assert_eq!(out, b"KEYS 2 40 1\na 3 x y\nb 4 \n");
    let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
    let (n, mut back) = ScanPage::parse_header(lines[0]).unwrap();
    back.entries = lines[1..=n]
        .iter()
        .map(|l| ScanPage::parse_line(l).unwrap())
        .collect();
    assert_eq!(back, page);
    for event in [
        WatchEvent::Change {
            rev: 3,
            key: b"k".to_vec(),
            value: Some(b" v ".to_vec()),
        },
        WatchEvent::Change {
            rev: 4,
            key: b"k".to_vec(),
            value: None,
        },
        WatchEvent::Progress(9),
        WatchEvent::End(WatchEnd::Overflow),
        WatchEvent::End(WatchEnd::Compacted(2)),
    ] {
        let mut line = Vec::new();
        event.encode(&mut line);
        assert_eq!(line.pop(), Some(b'\n'));
        assert_eq!(WatchEvent::parse(&line).unwrap(), event);
    }
}
