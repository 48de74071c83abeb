//! Splits a byte stream into lines with a hard length limit, so a client that
//! never sends `\n` cannot make the server buffer without bound.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line too long")]
    TooLong,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Newline-delimited frames of at most `max_len` bytes (the `\n` excluded).
#[derive(Clone, Debug)]
pub struct LineCodec {
    max_len: usize,
    /// How far the buffer was already searched for `\n`.
    scanned: usize,
}

impl LineCodec {
    pub fn new(max_len: usize) -> LineCodec {
        LineCodec {
            max_len,
            scanned: 0,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Vec<u8>;
    type Error = LineError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, LineError> {
        match buf[self.scanned..].iter().position(|&b| b == b'\n') {
            Some(offset) => {
                let at = self.scanned + offset;
                self.scanned = 0;
                if at > self.max_len {
                    return Err(LineError::TooLong);
                }
                let line = buf.split_to(at + 1);
                Ok(Some(line[..at].to_vec()))
            }
            None => {
                self.scanned = buf.len();
                if buf.len() > self.max_len {
                    return Err(LineError::TooLong);
                }
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<u8>>, LineError> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        // A last line without `\n` (e.g. `printf 'PING' | nc`) still counts.
        self.scanned = 0;
        if buf.is_empty() {
            Ok(None)
        } else {
            let line = buf.split_to(buf.len());
            Ok(Some(line.to_vec()))
        }
    }
}
