//! `DELETE <key>`: `OK` also when the key is missing.

use super::{Args, ParseError};

/// Remove one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub key: Vec<u8>,
}

impl Delete {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Delete, ParseError> {
        let key = args.key("DELETE")?;
        args.finish("DELETE")?;
        Ok(Delete { key })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"DELETE ");
        out.extend_from_slice(&self.key);
    }
}
