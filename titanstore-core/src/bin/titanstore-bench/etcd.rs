//! etcd's v3 JSON gateway as the load generator speaks it, over HTTP/1.1
//! keep-alive: a write is `POST /v3/kv/put {"key","value"}`, a read
//! `POST /v3/kv/range {"key"}` (with `"serializable": true` for stale reads),
//! keys and values base64 as the gateway wants them. A reply is an error when
//! its status is not 200 or its JSON body carries an error (`error`, or a
//! nonzero `code`). Only what etcd's gateway sends is read: a body with a
//! `Content-Length` or chunked (Go chunks replies above about 2 KB).

use std::fmt::Write as _;
use std::io;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::IgnoredAny;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

use crate::Protocol;

/// Replies larger than this are refused rather than buffered.
const MAX_BODY: usize = 64 << 20;

pub struct EtcdGateway {
    host: String,
    value_b64: String,
    serializable: bool,
    key: String,
    body: String,
    line: String,
    reply: Vec<u8>,
}

impl EtcdGateway {
    /// A connection to `host` (sent as the `Host` header).
    pub fn new(host: &str, value_size: usize, stale_reads: bool) -> Self {
        Self {
            host: host.to_owned(),
            value_b64: STANDARD.encode("x".repeat(value_size)),
            serializable: stale_reads,
            key: String::new(),
            body: String::new(),
            line: String::new(),
            reply: Vec::new(),
        }
    }

    async fn read_line<R: AsyncBufRead + Unpin>(&mut self, input: &mut R) -> io::Result<()> {
        self.line.clear();
        if input.read_line(&mut self.line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }

    /// Appends `len` body bytes to `self.reply`.
    async fn read_body<R: AsyncBufRead + Unpin>(
        &mut self,
        input: &mut R,
        len: usize,
    ) -> io::Result<()> {
        if self.reply.len().saturating_add(len) > MAX_BODY {
            return Err(invalid(format!("reply body over {MAX_BODY} bytes")));
        }
        let start = self.reply.len();
        self.reply.resize(start + len, 0);
        input.read_exact(&mut self.reply[start..]).await?;
        Ok(())
    }

    async fn read_chunked<R: AsyncBufRead + Unpin>(&mut self, input: &mut R) -> io::Result<()> {
        loop {
            self.read_line(input).await?;
            let size = self.line.trim_end();
            let size = size.split_once(';').map_or(size, |(size, _)| size);
            let size = usize::from_str_radix(size.trim(), 16)
                .map_err(|_| invalid(format!("bad chunk size line {:?}", self.line)))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    self.read_line(input).await?;
                    if self.line.trim_end().is_empty() {
                        return Ok(());
                    }
                }
            }
            self.read_body(input, size).await?;
            self.read_line(input).await?;
            if !self.line.trim_end().is_empty() {
                return Err(invalid("chunk not followed by CRLF".to_owned()));
            }
        }
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP reply: {why}"))
}

/// The parts of a gateway reply that say it failed.
#[derive(Deserialize)]
struct GatewayReply {
    error: Option<IgnoredAny>,
    code: Option<i64>,
}

fn reports_error(body: &[u8]) -> bool {
    match serde_json::from_slice::<GatewayReply>(body) {
        Ok(reply) => reply.error.is_some() || reply.code.is_some_and(|code| code != 0),
        Err(_) => true,
    }
}

impl Protocol for EtcdGateway {
    fn encode(&mut self, out: &mut Vec<u8>, key: u64, read: bool) {
        self.key.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.key, "k{key}");
        self.body.clear();
        self.body.push_str(r#"{"key":""#);
        STANDARD.encode_string(&self.key, &mut self.body);
        let path = if read {
            if self.serializable {
                self.body.push_str(r#"","serializable":true}"#);
            } else {
                self.body.push_str(r#""}"#);
            }
            "/v3/kv/range"
        } else {
            self.body.push_str(r#"","value":""#);
            self.body.push_str(&self.value_b64);
            self.body.push_str(r#""}"#);
            "/v3/kv/put"
        };
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            self.body.len()
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(self.body.as_bytes());
    }

    async fn read_reply<R: AsyncBufRead + Unpin + Send>(
        &mut self,
        input: &mut R,
    ) -> io::Result<bool> {
        self.read_line(input).await?;
        let status = self
            .line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| invalid(format!("bad status line {:?}", self.line)))?;
        let mut length = None;
        let mut chunked = false;
        loop {
            self.read_line(input).await?;
            let header = self.line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| invalid(format!("bad header {header:?}")))?;
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| invalid(format!("bad Content-Length {value:?}")))?,
                );
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
        self.reply.clear();
        match (chunked, length) {
            (true, _) => self.read_chunked(input).await?,
            (false, Some(len)) => self.read_body(input, len).await?,
            (false, None) => {
                return Err(invalid(
                    "neither Content-Length nor chunked (cannot tell where it ends)".to_owned(),
                ));
            }
        }
        Ok(status != 200 || reports_error(&self.reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_base64_keys_and_values() {
        let mut gateway = EtcdGateway::new("h:1", 3, false);
        let mut out = Vec::new();
        gateway.encode(&mut out, 7, false);
        let text = String::from_utf8(out).unwrap_or_default();
        // "k7" is "azc=", "xxx" is "eHh4".
        let body = r#"{"key":"azc=","value":"eHh4"}"#;
        assert_eq!(
            text,
            format!(
                "POST /v3/kv/put HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        );
        let mut stale = EtcdGateway::new("h:1", 3, true);
        let mut out = Vec::new();
        stale.encode(&mut out, 7, true);
        let text = String::from_utf8(out).unwrap_or_default();
        assert!(text.starts_with("POST /v3/kv/range HTTP/1.1\r\n"), "{text}");
        assert!(
            text.ends_with(r#"{"key":"azc=","serializable":true}"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn replies_with_length_or_chunks_and_errors_are_told_apart() {
        let stream: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"header\":{}}\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"kvs\r\n4\r\n\":[]\r\n1\r\n}\r\n0\r\n\r\n\
HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}\
HTTP/1.1 200 OK\r\nContent-Length: 23\r\n\r\n{\"error\":\"x\",\"code\":14}\
HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!\
HTTP/1.1 200 OK\r\n\r\n";
        let mut input = tokio::io::BufReader::new(stream);
        let mut gateway = EtcdGateway::new("h", 1, false);
        let mut errors = Vec::new();
        for _ in 0..5 {
            errors.push(gateway.read_reply(&mut input).await.ok());
        }
        assert_eq!(
            errors,
            [Some(false), Some(false), Some(true), Some(true), Some(true)]
        );
        let err = gateway.read_reply(&mut input).await.err();
        assert!(
            err.is_some_and(|err| err.to_string().contains("Content-Length")),
            "a reply without a length is refused"
        );
    }
}
