//! `PING`: liveness check, answered `PONG` by the connection itself.

use super::{Args, ParseError};

/// Liveness check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ping;

impl Ping {
    pub(crate) fn parse(args: &mut Args<'_>) -> Result<Ping, ParseError> {
        args.finish("PING")?;
        Ok(Ping)
    }
}
