//! `SET <key> <value>`: the value is the rest of the line, byte for byte.

use super::{Args, ParseError};

/// Write one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Set {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Set, ParseError> {
        let key = args.key("SET")?;
        // The value is everything after the single space that follows the key:
        // it may be empty and may hold leading, inner and trailing spaces.
        let value = args.remainder().ok_or(ParseError::WrongArgs("SET"))?;
        Ok(Set {
            key,
            value: value.to_vec(),
        })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"SET ");
        out.extend_from_slice(&self.key);
        out.push(b' ');
        out.extend_from_slice(&self.value);
    }
}
