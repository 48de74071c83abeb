//! `GET <key>` (linearizable) and `SGET <key>` (stale, local state).

use super::{Args, ParseError};

/// Read one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Get {
    pub key: Vec<u8>,
    /// `SGET`: answer from local state without confirming with the leader.
    pub stale: bool,
}

impl Get {
    pub(crate) fn parse(args: &mut Args<'_>, stale: bool) -> Result<Get, ParseError> {
        let name = if stale { "SGET" } else { "GET" };
        let key = args.key(name)?;
        args.finish(name)?;
        Ok(Get { key, stale })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.stale { b"SGET " } else { b"GET " });
        out.extend_from_slice(&self.key);
    }
}
