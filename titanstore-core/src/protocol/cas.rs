//! `CAS <key> <expected_rev> <value>`: write only if the key's `mod_rev` is
//! `expected_rev` (0: only if absent). Decided when the entry is applied.
//! Reply `OK <rev>` or `ERR CONFLICT <current_rev>`; redirected like `SET`.

use super::{Args, ParseError};
use crate::types::LogIndex;

/// Compare-and-set one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cas {
    pub key: Vec<u8>,
    pub expected: LogIndex,
    pub value: Vec<u8>,
}

impl Cas {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Cas, ParseError> {
        let key = args.key("CAS")?;
        let expected = args.number("CAS", "revision")?;
        // As for SET, the value is the rest of the line, byte for byte.
        let value = args.remainder().ok_or(ParseError::WrongArgs("CAS"))?;
        Ok(Cas {
            key,
            expected,
            value: value.to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"CAS ");
        out.extend_from_slice(&self.key);
        out.extend_from_slice(format!(" {} ", self.expected).as_bytes());
        out.extend_from_slice(&self.value);
    }
}
