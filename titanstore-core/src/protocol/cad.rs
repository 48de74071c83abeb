//! `CAD <key> <expected_rev>`: delete only if the key's `mod_rev` is
//! `expected_rev`. A missing key is `ERR CONFLICT 0`; `CAD <key> 0` is a
//! bad request (a delete needs an existing revision).

use super::{Args, ParseError};
use crate::types::LogIndex;

/// Compare-and-delete one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cad {
    pub key: Vec<u8>,
    pub expected: LogIndex,
}

impl Cad {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Cad, ParseError> {
        let key = args.key("CAD")?;
        let expected = args.number("CAD", "revision")?;
        args.finish("CAD")?;
        if expected == 0 {
            return Err(ParseError::CadZero);
        }
        Ok(Cad { key, expected })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"CAD ");
        out.extend_from_slice(&self.key);
        out.extend_from_slice(format!(" {}", self.expected).as_bytes());
    }
}
