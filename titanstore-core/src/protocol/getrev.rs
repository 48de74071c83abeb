//! `GETREV <key>`: the value and the revision that last wrote it
//! (linearizable, like `GET`). Reply `VALUE <mod_rev> <value>` or `NOT_FOUND`.

use super::{Args, ParseError};

/// Read one key with its `mod_rev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetRev {
    pub key: Vec<u8>,
}

impl GetRev {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<GetRev, ParseError> {
        let key = args.key("GETREV")?;
        args.finish("GETREV")?;
        Ok(GetRev { key })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"GETREV ");
        out.extend_from_slice(&self.key);
    }
}
