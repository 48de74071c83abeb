//! `WATCH <from_rev> [<prefix>]`: turns the connection into a stream of every
//! change to matching keys with revision >= `from_rev` (0: from now), in
//! revision order, no gaps, no repeats. The first reply is `WATCHING <r>`
//! (or `ERR COMPACTED <oldest>`); then `EVENT <rev> SET <key> <value>`,
//! `EVENT <rev> DEL <key>` and, when idle, `PROGRESS <rev>` lines, until a
//! final `ERR ...` line ([`WatchEnd`]) closes it.

use super::{Args, ParseError};
use crate::types::LogIndex;

/// Start a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// 0: from the node's applied revision + 1.
    pub from_rev: LogIndex,
    /// `None`: every key (`*` on the wire is the same).
    pub prefix: Option<Vec<u8>>,
}

impl Watch {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Watch, ParseError> {
        let from_rev = args.number("WATCH", "revision")?;
        let prefix = match args.is_done() {
            true => None,
            false => Some(args.key("WATCH")?),
        };
        args.finish("WATCH")?;
        Ok(Watch {
            from_rev,
            prefix: prefix.filter(|p| p != b"*"),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("WATCH {}", self.from_rev).as_bytes());
        if let Some(prefix) = &self.prefix {
            out.push(b' ');
            out.extend_from_slice(prefix);
        }
    }
}

/// Why a watch stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// `ERR WATCH_OVERFLOW`: the watcher fell too far behind; resume elsewhere or here.
    Overflow,
    /// `ERR COMPACTED <oldest>`: the node no longer holds the history needed.
    Compacted(LogIndex),
    /// `ERR <reason>` (e.g. the node is stopping).
    Stopped(String),
}

/// One line of a watch stream after `WATCHING`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// `EVENT <rev> SET <key> <value>` or, with `value: None`, `EVENT <rev> DEL <key>`.
    Change {
        rev: LogIndex,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
    /// `PROGRESS <rev>`: every matching change up to `rev` was delivered.
    Progress(LogIndex),
    /// The last line of the stream.
    End(WatchEnd),
}

impl WatchEvent {
    /// Encodes the line, `\n` included.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            WatchEvent::Change { rev, key, value } => {
                out.extend_from_slice(format!("EVENT {rev} ").as_bytes());
                match value {
                    Some(value) => {
                        out.extend_from_slice(b"SET ");
                        out.extend_from_slice(key);
                        out.push(b' ');
                        out.extend_from_slice(value);
                    }
                    None => {
                        out.extend_from_slice(b"DEL ");
                        out.extend_from_slice(key);
                    }
                }
            }
            WatchEvent::Progress(rev) => {
                out.extend_from_slice(format!("PROGRESS {rev}").as_bytes())
            }
            WatchEvent::End(WatchEnd::Overflow) => out.extend_from_slice(b"ERR WATCH_OVERFLOW"),
            WatchEvent::End(WatchEnd::Compacted(oldest)) => {
                out.extend_from_slice(format!("ERR COMPACTED {oldest}").as_bytes())
            }
            WatchEvent::End(WatchEnd::Stopped(reason)) => {
                out.extend_from_slice(b"ERR ");
                out.extend_from_slice(reason.as_bytes());
            }
        }
        out.push(b'\n');
    }

    /// Parses one stream line (without `\n`).
    pub fn parse(line: &[u8]) -> Result<WatchEvent, String> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let bad = || format!("unrecognised watch line: {}", String::from_utf8_lossy(line));
        let number = |b: &[u8]| -> Result<LogIndex, String> {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(bad)
        };
        if let Some(rest) = line.strip_prefix(b"EVENT ") {
            let mut args = Args { rest: Some(rest) };
            let rev = number(args.next_token().ok_or_else(bad)?)?;
            let kind = args.next_token().ok_or_else(bad)?;
            let key = args.next_token().ok_or_else(bad)?.to_vec();
            let value = match kind {
                b"SET" => Some(args.remainder().ok_or_else(bad)?.to_vec()),
                b"DEL" if args.is_done() => None,
                _ => return Err(bad()),
            };
            return Ok(WatchEvent::Change { rev, key, value });
        }
        if let Some(rev) = line.strip_prefix(b"PROGRESS ") {
            return Ok(WatchEvent::Progress(number(rev)?));
        }
        if line == b"ERR WATCH_OVERFLOW" {
            return Ok(WatchEvent::End(WatchEnd::Overflow));
        }
        if let Some(oldest) = line.strip_prefix(b"ERR COMPACTED ") {
            return Ok(WatchEvent::End(WatchEnd::Compacted(number(oldest)?)));
        }
        if let Some(reason) = line.strip_prefix(b"ERR ") {
            return Ok(WatchEvent::End(WatchEnd::Stopped(
                String::from_utf8_lossy(reason).into_owned(),
            )));
        }
        Err(bad())
    }
}
