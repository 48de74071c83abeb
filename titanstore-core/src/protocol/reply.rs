//! Replies, encoded by the server and parsed by the client.

use super::{ParseError, ScanPage};
use crate::types::LogIndex;

/// One reply line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `VALUE <value>`
    Value(Vec<u8>),
    /// `NOT_FOUND`
    NotFound,
    /// `OK`: the write is committed (durable on a majority).
    Ok,
    /// `PONG`
    Pong,
    /// `STATUS k=v k=v ...`
    Status(Vec<(String, String)>),
    /// `ERR NOT_LEADER <leader client addr>`
    NotLeader(String),
    /// `ERR NO_LEADER`
    NoLeader,
    /// `ERR DROPPED <reason>`: the write was definitely not applied; safe to retry.
    Dropped(String),
    /// `ERR UNKNOWN <reason>`: the write may or may not have been applied.
    Unknown(String),
    /// `ERR NOSPACE <reason>`: this node's disk is full; the write was not
    /// proposed (safe to retry, e.g. on another node).
    NoSpace(String),
    /// `ERR BUSY <reason>`: refused under load, not attempted; retry later.
    Busy(String),
    /// `ERR <reason>`: a bad request or another failure.
    Error(String),
    /// `MEMBERS <id>:<host>:<raft_port>:<client_port>:<voter|learner> ...`
    Members(Vec<String>),
    /// `OK <rev>`: a CAS or CAD committed at `rev`.
    OkRev(LogIndex),
    /// `ERR CONFLICT <current_rev>`: a CAS or CAD whose expected revision was
    /// not the key's (0: the key is absent).
    Conflict(LogIndex),
    /// `ERR SESSION_EXPIRED`: a `REQ` retry of a forgotten session or seq.
    SessionExpired,
    /// `VALUE <mod_rev> <value>` (GETREV). Parsed back as [`Reply::Value`]:
    /// only the request says which it is (see [`Reply::split_rev`]).
    ValueRev(LogIndex, Vec<u8>),
    /// `KEYS <n> <revision> <more>` and n lines (multi-line; see [`ScanPage`]).
    Keys(ScanPage),
    /// `WATCHING <rev>`: a watch stream follows.
    Watching(LogIndex),
    /// `ERR COMPACTED <oldest>`: a watch asked for history the node no longer has.
    Compacted(LogIndex),
}

impl Reply {
    /// Encodes the reply, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Value(value) => {
                out.extend_from_slice(b"VALUE ");
                out.extend_from_slice(value);
            }
            Reply::NotFound => out.extend_from_slice(b"NOT_FOUND"),
            Reply::Ok => out.extend_from_slice(b"OK"),
            Reply::Pong => out.extend_from_slice(b"PONG"),
            Reply::Status(fields) => {
                out.extend_from_slice(b"STATUS");
                for (k, v) in fields {
                    out.push(b' ');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(v.as_bytes());
                }
            }
            Reply::NotLeader(addr) => tagged(out, b"ERR NOT_LEADER ", addr),
            Reply::NoLeader => out.extend_from_slice(b"ERR NO_LEADER"),
            Reply::Dropped(reason) => tagged(out, b"ERR DROPPED ", reason),
            Reply::Unknown(reason) => tagged(out, b"ERR UNKNOWN ", reason),
            Reply::NoSpace(reason) => tagged(out, b"ERR NOSPACE ", reason),
            Reply::Busy(reason) => tagged(out, b"ERR BUSY ", reason),
            Reply::Error(reason) => tagged(out, b"ERR ", reason),
            Reply::Members(members) => {
                out.extend_from_slice(b"MEMBERS");
                for m in members {
                    out.push(b' ');
                    out.extend_from_slice(m.as_bytes());
                }
            }
            Reply::OkRev(rev) => out.extend_from_slice(format!("OK {rev}").as_bytes()),
            Reply::Conflict(rev) => out.extend_from_slice(format!("ERR CONFLICT {rev}").as_bytes()),
            Reply::SessionExpired => out.extend_from_slice(b"ERR SESSION_EXPIRED"),
            Reply::ValueRev(rev, value) => {
                out.extend_from_slice(format!("VALUE {rev} ").as_bytes());
                out.extend_from_slice(value);
            }
            Reply::Keys(page) => page.encode(out),
            Reply::Watching(rev) => out.extend_from_slice(format!("WATCHING {rev}").as_bytes()),
            Reply::Compacted(rev) => {
                out.extend_from_slice(format!("ERR COMPACTED {rev}").as_bytes())
            }
        }
        out.push(b'\n');
    }

    /// Reads a GETREV answer out of a parsed `VALUE <mod_rev> <value>`.
    pub fn split_rev(value: &[u8]) -> Option<(LogIndex, Vec<u8>)> {
        let at = value.iter().position(|&b| b == b' ')?;
        let rev = std::str::from_utf8(&value[..at]).ok()?.parse().ok()?;
        Some((rev, value[at + 1..].to_vec()))
    }

    /// Parses a reply line (without `\n`).
    pub fn parse(line: &[u8]) -> Result<Reply, String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = || String::from_utf8_lossy(line).into_owned();
        if let Some(value) = line.strip_prefix(b"VALUE ") {
            return Ok(Reply::Value(value.to_vec()));
        }
        match line {
            b"VALUE" => return Ok(Reply::Value(Vec::new())),
            b"NOT_FOUND" => return Ok(Reply::NotFound),
            b"OK" => return Ok(Reply::Ok),
            b"PONG" => return Ok(Reply::Pong),
            b"ERR NO_LEADER" => return Ok(Reply::NoLeader),
            b"ERR SESSION_EXPIRED" => return Ok(Reply::SessionExpired),
            _ => {}
        }
        if let Some(rest) = line.strip_prefix(b"MEMBERS") {
            let members = String::from_utf8_lossy(rest)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            return Ok(Reply::Members(members));
        }
        let number = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse().ok());
        for (prefix, make) in [
            (&b"OK "[..], Reply::OkRev as fn(LogIndex) -> Reply),
            (b"ERR CONFLICT ", Reply::Conflict),
            (b"WATCHING ", Reply::Watching),
            (b"ERR COMPACTED ", Reply::Compacted),
        ] {
            if let Some(rev) = line.strip_prefix(prefix).and_then(number) {
                return Ok(make(rev));
            }
        }
        if line.starts_with(b"KEYS ") {
            return Err(format!("multi-line reply read as one line: {}", text()));
        }
        if let Some(rest) = line.strip_prefix(b"STATUS") {
            let fields = String::from_utf8_lossy(rest)
                .split_whitespace()
                .filter_map(|field| {
                    let (k, v) = field.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect();
            return Ok(Reply::Status(fields));
        }
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if let Some(addr) = line.strip_prefix(b"ERR NOT_LEADER ") {
            return Ok(Reply::NotLeader(lossy(addr)));
        }
        if let Some(reason) = line.strip_prefix(b"ERR DROPPED ") {
            return Ok(Reply::Dropped(lossy(reason)));
        }
        if let Some(reason) = line.strip_prefix(b"ERR UNKNOWN ") {
            return Ok(Reply::Unknown(lossy(reason)));
        }
        if let Some(reason) = line.strip_prefix(b"ERR NOSPACE ") {
            return Ok(Reply::NoSpace(lossy(reason)));
        }
        if let Some(reason) = line.strip_prefix(b"ERR BUSY ") {
            return Ok(Reply::Busy(lossy(reason)));
        }
        if let Some(reason) = line.strip_prefix(b"ERR ") {
            return Ok(Reply::Error(lossy(reason)));
        }
        Err(format!("unrecognised reply: {}", text()))
    }
}

impl From<ParseError> for Reply {
    fn from(err: ParseError) -> Reply {
        Reply::Error(err.to_string())
    }
}

/// `<tag><text>`, as every `ERR <KIND> <text>` reply is written.
fn tagged(out: &mut Vec<u8>, tag: &[u8], reason: &str) {
    out.extend_from_slice(tag);
    out.extend_from_slice(reason.as_bytes());
}
