//! `TRANSFER [<id>]`: move leadership to `<id>` (or the most caught-up voter).

use super::{Args, ParseError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    pub target: Option<String>,
}

impl Transfer {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Transfer, ParseError> {
        let target = match args.next_token() {
            None => None,
            Some(t) => Some(
                std::str::from_utf8(t)
                    .map_err(|_| ParseError::BadArg("node id is not UTF-8".into()))?
                    .to_string(),
            ),
        };
        args.finish("TRANSFER")?;
        Ok(Transfer { target })
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"TRANSFER");
        if let Some(t) = &self.target {
            out.push(b' ');
            out.extend_from_slice(t.as_bytes());
        }
    }
}
