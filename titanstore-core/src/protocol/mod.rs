//! The plaintext client protocol: one request per line, one reply per request.
//!
//! This module owns parsing requests and encoding replies, byte for byte. It
//! does not talk to the node: [`crate::server`] runs each parsed [`Request`]
//! against a [`crate::node::NodeHandle`]. Keys and values are raw bytes.

mod cad;
mod cas;
mod codec;
mod delete;
mod get;
mod getrev;
mod member;
mod ping;
mod reply;
mod req;
mod scan;
mod set;
mod status;
mod transfer;
mod watch;

pub use cad::Cad;
pub use cas::Cas;
pub use codec::{LineCodec, LineError};
pub use delete::Delete;
pub use get::Get;
pub use getrev::GetRev;
pub use member::{Member, MemberSpec};
pub use ping::Ping;
pub use reply::Reply;
pub use req::{MAX_CLIENT_ID, Req};
pub use scan::{MAX_SCAN_LIMIT, Scan, ScanPage};
pub use set::Set;
pub use status::StatusCmd;
pub use transfer::Transfer;
pub use watch::{Watch, WatchEnd, WatchEvent};

/// A parsed client request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Get(Get),
    Set(Set),
    Delete(Delete),
    Ping(Ping),
    Status(StatusCmd),
    Member(Member),
    Transfer(Transfer),
    GetRev(GetRev),
    Cas(Cas),
    Cad(Cad),
    Scan(Scan),
    Watch(Watch),
    Req(Req),
}

impl Request {
    /// Whether the request changes the store (goes through the log).
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Set(_)
                | Request::Delete(_)
                | Request::Cas(_)
                | Request::Cad(_)
                | Request::Req(_)
                | Request::Transfer(_)
                | Request::Member(
                    Member::Add { .. } | Member::Promote { .. } | Member::Remove { .. }
                )
        )
    }
}

/// Why a line is not a valid request. Rendered as `ERR <reason>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    #[error("wrong number of arguments for '{0}'")]
    WrongArgs(&'static str),
    #[error("empty key")]
    EmptyKey,
    #[error("key contains whitespace")]
    KeyWhitespace,
    #[error("{0}")]
    BadArg(String),
    #[error("invalid {0} '{1}'")]
    BadNumber(&'static str, String),
    #[error("limit must be between 1 and 10000")]
    BadLimit,
    #[error("CAD needs the key's current revision (0 is never one)")]
    CadZero,
    #[error("unknown {0} subcommand '{1}'")]
    UnknownSubcommand(&'static str, String),
    #[error("client id must be 1 to 64 bytes without whitespace")]
    BadClientId,
}

/// The words after the command name, split at single spaces.
pub(crate) struct Args<'a> {
    rest: Option<&'a [u8]>,
}

impl<'a> Args<'a> {
    /// Takes the next space-delimited token, if any.
    pub(crate) fn next_token(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest?;
        match rest.iter().position(|&b| b == b' ') {
            Some(at) => {
                self.rest = Some(&rest[at + 1..]);
                Some(&rest[..at])
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }

    /// Takes the rest of the line verbatim (may be empty, may hold spaces).
    pub(crate) fn remainder(&mut self) -> Option<&'a [u8]> {
        self.rest.take()
    }

    /// Whether nothing (not even an empty remainder) is left.
    pub(crate) fn is_done(&self) -> bool {
        self.rest.is_none()
    }

    /// Takes a key token and validates it.
    pub(crate) fn key(&mut self, cmd: &'static str) -> Result<Vec<u8>, ParseError> {
        let key = self.next_token().ok_or(ParseError::WrongArgs(cmd))?;
        validate_key(key)?;
        Ok(key.to_vec())
    }

    /// Takes a decimal number token (`what` names it in the error).
    pub(crate) fn number(
        &mut self,
        cmd: &'static str,
        what: &'static str,
    ) -> Result<u64, ParseError> {
        let token = self.next_token().ok_or(ParseError::WrongArgs(cmd))?;
        let valid = !token.is_empty() && token.len() <= 20 && token.iter().all(u8::is_ascii_digit);
        std::str::from_utf8(token)
            .ok()
            .filter(|_| valid)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| ParseError::BadNumber(what, String::from_utf8_lossy(token).into_owned()))
    }

    /// Fails unless all arguments were consumed.
    pub(crate) fn finish(&self, cmd: &'static str) -> Result<(), ParseError> {
        if self.is_done() {
            Ok(())
        } else {
            Err(ParseError::WrongArgs(cmd))
        }
    }
}

fn validate_key(key: &[u8]) -> Result<(), ParseError> {
    if key.is_empty() {
        return Err(ParseError::EmptyKey);
    }
    if key.iter().any(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::KeyWhitespace);
    }
    Ok(())
}

impl Request {
    /// Parses one line (without its `\n`; a trailing `\r` is dropped here).
    /// Returns `Ok(None)` for an empty line, which gets no reply.
    pub fn parse(line: &[u8]) -> Result<Option<Request>, ParseError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Ok(None);
        }
        let (name, rest) = match line.iter().position(|&b| b == b' ') {
            Some(at) => (&line[..at], Some(&line[at + 1..])),
            None => (line, None),
        };
        let mut args = Args { rest };
        let name_upper = name.to_ascii_uppercase();
        let request = match name_upper.as_slice() {
            b"GET" => Request::Get(Get::parse(&mut args, false)?),
            b"SGET" => Request::Get(Get::parse(&mut args, true)?),
            b"SET" => Request::Set(Set::parse(&mut args)?),
            b"DELETE" | b"DEL" => Request::Delete(Delete::parse(&mut args)?),
            b"PING" => Request::Ping(Ping::parse(&mut args)?),
            b"STATUS" => Request::Status(StatusCmd::parse(&mut args)?),
            b"MEMBER" => Request::Member(Member::parse(&mut args)?),
            b"TRANSFER" => Request::Transfer(Transfer::parse(&mut args)?),
            b"GETREV" => Request::GetRev(GetRev::parse(&mut args)?),
            b"CAS" => Request::Cas(Cas::parse(&mut args)?),
            b"CAD" => Request::Cad(Cad::parse(&mut args)?),
            b"SCAN" => Request::Scan(Scan::parse(&mut args)?),
            b"WATCH" => Request::Watch(Watch::parse(&mut args)?),
            b"REQ" => Request::Req(Req::parse(&mut args)?),
            _ => {
                return Err(ParseError::UnknownCommand(
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
        };
        Ok(Some(request))
    }

    /// Encodes the request as a protocol line, `\n` included (used by the client).
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_line(out);
        out.push(b'\n');
    }

    /// [`Request::encode`] without the `\n`.
    pub(crate) fn encode_line(&self, out: &mut Vec<u8>) {
        match self {
            Request::Get(get) => get.encode(out),
            Request::Set(set) => set.encode(out),
            Request::Delete(delete) => delete.encode(out),
            Request::Ping(_) => out.extend_from_slice(b"PING"),
            Request::Status(_) => out.extend_from_slice(b"STATUS"),
            Request::Member(member) => member.encode(out),
            Request::Transfer(transfer) => transfer.encode(out),
            Request::GetRev(get) => get.encode(out),
            Request::Cas(cas) => cas.encode(out),
            Request::Cad(cad) => cad.encode(out),
            Request::Scan(scan) => scan.encode(out),
            Request::Watch(watch) => watch.encode(out),
            Request::Req(req) => req.encode(out),
        }
    }
}

#[cfg(test)]
mod tests;
