//! `STATUS`: one line of `key=value` fields describing the node.

use super::{Args, ParseError};

/// Node status request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusCmd;

impl StatusCmd {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<StatusCmd, ParseError> {
        args.finish("STATUS")?;
        Ok(StatusCmd)
    }
}
