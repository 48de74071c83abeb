//! `REQ <client_id> <seq> <SET|DELETE|CAS|CAD ...>`: the write runs at most
//! once per (client_id, seq); a retry, on any node, after any failure, gets
//! the first reply. The check happens when the entry is applied (see
//! `state_machine/sessions.rs`); like any write, it is redirected on a follower.

use super::{Args, ParseError, Request};

/// Longest client id accepted.
pub const MAX_CLIENT_ID: usize = 64;

/// An exactly-once write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Req {
    pub client: Vec<u8>,
    /// 1 and up, increasing per client.
    pub seq: u64,
    /// A `Set`, `Delete`, `Cas` or `Cad`.
    pub write: Box<Request>,
}

impl Req {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Req, ParseError> {
        let client = args.next_token().ok_or(ParseError::WrongArgs("REQ"))?;
        if client.is_empty()
            || client.len() > MAX_CLIENT_ID
            || client.iter().any(|b| b.is_ascii_whitespace())
        {
            return Err(ParseError::BadClientId);
        }
        let seq = args.number("REQ", "seq")?;
        if seq == 0 {
            return Err(ParseError::BadNumber("seq", "0".into()));
        }
        let rest = args.remainder().ok_or(ParseError::WrongArgs("REQ"))?;
        let parsed = match Request::parse(rest) {
            Err(ParseError::UnknownCommand(name)) => {
                return Err(ParseError::UnknownSubcommand("REQ", name));
            }
            parsed => parsed?,
        };
        let write = match parsed {
            Some(
                write @ (Request::Set(_) | Request::Delete(_) | Request::Cas(_) | Request::Cad(_)),
            ) => write,
            Some(_) | None => {
                let name = rest.split(|&b| b == b' ').next().unwrap_or_default();
                return Err(ParseError::UnknownSubcommand(
                    "REQ",
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
        };
        Ok(Req {
            client: client.to_vec(),
            seq,
            write: Box::new(write),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"REQ ");
        out.extend_from_slice(&self.client);
        out.extend_from_slice(format!(" {} ", self.seq).as_bytes());
        self.write.encode_line(out);
    }
}
