//! TitanStore's line protocol as the load generator speaks it: `SET`, `GET`
//! or `SGET`, optionally `REQ`-wrapped writes; a reply is one line, an error
//! one that starts with `ERR`.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::Protocol;

pub struct TitanStore {
    get: &'static str,
    value: String,
    /// The `REQ` session and its last sequence number, with `--req`.
    session: Option<(String, u64)>,
    line: String,
}

impl TitanStore {
    pub fn new(value_size: usize, stale_reads: bool, req: bool, id: usize) -> Self {
        Self {
            get: if stale_reads { "SGET" } else { "GET" },
            value: "x".repeat(value_size),
            session: req.then(|| (format!("bench{}-{id}", std::process::id()), 0)),
            line: String::new(),
        }
    }
}

impl Protocol for TitanStore {
    fn encode(&mut self, out: &mut Vec<u8>, key: u64, read: bool) {
        let request = if read {
            format!("{} k{key}\n", self.get)
        } else if let Some((session, seq)) = &mut self.session {
            *seq += 1;
            format!("REQ {session} {seq} SET k{key} {}\n", self.value)
        } else {
            format!("SET k{key} {}\n", self.value)
        };
        out.extend_from_slice(request.as_bytes());
    }

    async fn read_reply<R: AsyncBufRead + Unpin + Send>(
        &mut self,
        input: &mut R,
    ) -> io::Result<bool> {
        self.line.clear();
        if input.read_line(&mut self.line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(self.line.starts_with("ERR"))
    }
}
