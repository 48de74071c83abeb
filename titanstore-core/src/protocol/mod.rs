//! The plaintext client protocol: one request per line, one reply per request.
//!
//! This module owns parsing requests and encoding replies, byte for byte. It
//! does not talk to the node: [`crate::server`] runs each parsed [`Request`]
//! against a [`crate::node::NodeHandle`]. Keys and values are raw bytes.

mod codec;
mod delete;
mod get;
mod member;
mod ping;
mod reply;
mod set;
mod status;
mod transfer;

pub use codec::{LineCodec, LineError};
pub use delete::Delete;
pub use get::Get;
pub use member::{Member, MemberSpec};
pub use ping::Ping;
pub use reply::Reply;
pub use set::Set;
pub use status::StatusCmd;
pub use transfer::Transfer;

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
        match self {
            Request::Get(get) => get.encode(out),
            Request::Set(set) => set.encode(out),
            Request::Delete(delete) => delete.encode(out),
            Request::Ping(_) => out.extend_from_slice(b"PING"),
            Request::Status(_) => out.extend_from_slice(b"STATUS"),
            Request::Member(member) => member.encode(out),
            Request::Transfer(transfer) => transfer.encode(out),
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests;
