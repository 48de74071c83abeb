//! A blocking client for the plaintext protocol, reusing the server's codec
//! ([`Request::encode`], [`Reply::parse`]). The Python package wraps it.
//!
//! It follows `ERR NOT_LEADER` redirects, retries `ERR NO_LEADER`, dropped
//! writes and connection failures until a retry deadline, and never retries
//! a write whose outcome is unknown: that is reported as
//! [`ClientError::Indeterminate`], which a linearizability checker needs.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::protocol::{
    Cad, Cas, Delete, Get, GetRev, MAX_CLIENT_ID, Ping, Reply, Request, Scan, Set, StatusCmd, Watch,
};

/// What can go wrong talking to a cluster.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("not the leader; the leader is at {addr}")]
    NotLeader { addr: String },
    #[error("the cluster has no leader")]
    NoLeader,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("server error: {0}")]
    Server(String),
    #[error("connection error: {0}")]
    Connection(String),
    #[error("timed out: {0}")]
    Timeout(String),
    #[error("outcome unknown: {0}")]
    Indeterminate(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Rejects what the line protocol cannot carry: a key must be one non-empty
/// token without whitespace, a value must not hold a line break (it would be
/// read as a second command).
pub fn validate(request: &Request) -> Result<(), ClientError> {
    let bad_key = |key: &[u8]| key.is_empty() || key.iter().any(|b| b.is_ascii_whitespace());
    let (keys, value): (Vec<&[u8]>, Option<&[u8]>) = match request {
        Request::Get(Get { key, .. })
        | Request::GetRev(GetRev { key })
        | Request::Delete(Delete { key })
        | Request::Cad(Cad { key, .. }) => (vec![key], None),
        Request::Set(Set { key, value }) | Request::Cas(Cas { key, value, .. }) => {
            (vec![key], Some(value))
        }
        Request::Scan(Scan { prefix, after, .. }) => (
            prefix.iter().chain(after).map(Vec::as_slice).collect(),
            None,
        ),
        Request::Watch(Watch { prefix, .. }) => (prefix.iter().map(Vec::as_slice).collect(), None),
        Request::Req(req) => {
            if bad_key(&req.client) || req.client.len() > MAX_CLIENT_ID {
                return Err(ClientError::InvalidInput(
                    "a client id must be 1 to 64 bytes without whitespace".into(),
                ));
            }
            return validate(&req.write);
        }
        Request::Ping(_) | Request::Status(_) => return Ok(()),
    };
    if keys.into_iter().any(bad_key) {
        return Err(ClientError::InvalidInput(
            "a key must be non-empty and contain no whitespace".into(),
        ));
    }
    if value.is_some_and(|value| value.iter().any(|b| *b == b'\n' || *b == b'\r')) {
        return Err(ClientError::InvalidInput(
            "a value cannot contain a line break".into(),
        ));
    }
    Ok(())
}

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Per-request socket timeout (connect, send, reply).
    pub timeout: Duration,
    /// How long to keep retrying redirects, missing leaders and failed
    /// connections; zero disables retries.
    pub retry_timeout: Duration,
    /// Follow `ERR NOT_LEADER` redirects.
    pub follow_redirects: bool,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(10),
            follow_redirects: true,
        }
    }
}

struct Conn {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A connection to a cluster (or one node), reused across calls.
pub struct Client {
    addrs: Vec<String>,
    /// Index into `addrs` of the node to try next.
    current: usize,
    options: ClientOptions,
    conn: Option<Conn>,
}

/// How a failed attempt may be retried.
enum Attempt {
    Done(Result<Reply, ClientError>),
    /// Try again (maybe elsewhere) if time is left.
    Retry(ClientError),
}

impl Client {
    /// A client for the given node addresses (`host:port`); it starts with the first.
    pub fn new(addrs: Vec<String>, options: ClientOptions) -> Result<Client, ClientError> {
        if addrs.is_empty() {
            return Err(ClientError::Connection("no addresses given".into()));
        }
        Ok(Client {
            addrs,
            current: 0,
            options,
            conn: None,
        })
    }

    /// The address of the node the client talks to now.
    pub fn current_addr(&self) -> &str {
        &self.addrs[self.current]
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Drops the connection; the next call reconnects.
    pub fn close(&mut self) {
        self.conn = None;
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.read_key(key, false)
    }

    /// Stale read: the contacted node's local state.
    pub fn sget(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        self.read_key(key, true)
    }

    fn read_key(&mut self, key: &[u8], stale: bool) -> Result<Option<Vec<u8>>, ClientError> {
        let request = Request::Get(Get {
            key: key.to_vec(),
            stale,
        });
        match self.execute(&request)? {
            Reply::Value(value) => Ok(Some(value)),
            Reply::NotFound => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    pub fn set(&mut self, key: &[u8], value: &[u8]) -> Result<(), ClientError> {
        let request = Request::Set(Set {
            key: key.to_vec(),
            value: value.to_vec(),
        });
        expect_ok(self.execute(&request)?)
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        let request = Request::Delete(Delete { key: key.to_vec() });
        expect_ok(self.execute(&request)?)
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        match self.execute(&Request::Ping(Ping))? {
            Reply::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// `STATUS` of the node the client is connected to, as key/value pairs.
    pub fn status(&mut self) -> Result<Vec<(String, String)>, ClientError> {
        match self.execute(&Request::Status(StatusCmd))? {
            Reply::Status(fields) => Ok(fields),
            other => Err(unexpected(other)),
        }
    }

    /// Sends every request before reading any reply, on one connection, and
    /// returns the raw replies in order. No redirects or retries.
    pub fn pipeline(&mut self, requests: &[Request]) -> Result<Vec<Reply>, ClientError> {
        for request in requests {
            validate(request)?;
        }
        let mut buf = Vec::new();
        for request in requests {
            request.encode(&mut buf);
        }
        let conn = self.connect()?;
        if let Err(err) = conn.writer.write_all(&buf) {
            self.conn = None;
            return Err(ClientError::Indeterminate(format!("send failed: {err}")));
        }
        let mut replies = Vec::with_capacity(requests.len());
        for _ in requests {
            match read_reply(conn) {
                Ok(reply) => replies.push(reply),
                Err(err) => {
                    self.conn = None;
                    return Err(ClientError::Indeterminate(err.to_string()));
                }
            }
        }
        Ok(replies)
    }

    /// Runs one request with redirects and retries.
    pub fn execute(&mut self, request: &Request) -> Result<Reply, ClientError> {
        validate(request)?;
        let is_write = matches!(request, Request::Set(_) | Request::Delete(_));
        let deadline = Instant::now() + self.options.retry_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let error = match self.attempt(request, is_write) {
                Attempt::Done(result) => return result,
                Attempt::Retry(error) => error,
            };
            if Instant::now() + backoff >= deadline {
                return Err(error);
            }
            if !matches!(error, ClientError::NotLeader { .. }) {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
        }
    }

    fn attempt(&mut self, request: &Request, is_write: bool) -> Attempt {
        let mut line = Vec::new();
        request.encode(&mut line);
        let conn = match self.connect() {
            Ok(conn) => conn,
            Err(err) => {
                self.rotate();
                return Attempt::Retry(err);
            }
        };
        if let Err(err) = conn.writer.write_all(&line) {
            self.conn = None;
            // Nothing may have reached the server, but we cannot know.
            let error = ClientError::Connection(format!("send failed: {err}"));
            return if is_write {
                Attempt::Done(Err(ClientError::Indeterminate(error.to_string())))
            } else {
                Attempt::Retry(error)
            };
        }
        let reply = match read_reply(conn) {
            Ok(reply) => reply,
            Err(err) => {
                self.conn = None;
                return match (is_write, err) {
                    (true, err) => Attempt::Done(Err(ClientError::Indeterminate(err.to_string()))),
                    (false, err @ ClientError::Timeout(_)) => Attempt::Done(Err(err)),
                    (false, err) => Attempt::Retry(err),
                };
            }
        };
        match reply {
            Reply::NotLeader(addr) => {
                let error = ClientError::NotLeader { addr: addr.clone() };
                if !self.options.follow_redirects {
                    return Attempt::Done(Err(error));
                }
                self.redirect(addr);
                Attempt::Retry(error)
            }
            Reply::NoLeader => Attempt::Retry(ClientError::NoLeader),
            Reply::Dropped(reason) => Attempt::Retry(ClientError::Server(reason)),
            Reply::Unknown(reason) => Attempt::Done(Err(ClientError::Indeterminate(reason))),
            Reply::Error(reason) if reason == "read timed out" => {
                Attempt::Retry(ClientError::Timeout(reason))
            }
            Reply::Error(reason) => Attempt::Done(Err(ClientError::Server(reason))),
            reply => Attempt::Done(Ok(reply)),
        }
    }

    fn redirect(&mut self, addr: String) {
        self.conn = None;
        match self.addrs.iter().position(|a| *a == addr) {
            Some(i) => self.current = i,
            None => {
                self.addrs.push(addr);
                self.current = self.addrs.len() - 1;
            }
        }
    }

    fn rotate(&mut self) {
        self.conn = None;
        self.current = (self.current + 1) % self.addrs.len();
    }

    fn connect(&mut self) -> Result<&mut Conn, ClientError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|conn| !is_alive(&conn.writer))
        {
            // The node went away (or restarted) since the last call: sending on
            // the dead socket would make a write look indeterminate for nothing.
            self.conn = None;
        }
        if self.conn.is_none() {
            let addr = self.addrs[self.current].clone();
            let stream = open(&addr, self.options.timeout)?;
            let reader = stream
                .try_clone()
                .map_err(|err| ClientError::Connection(err.to_string()))?;
            self.conn = Some(Conn {
                addr,
                reader: BufReader::new(reader),
                writer: stream,
            });
        }
        self.conn
            .as_mut()
            .ok_or_else(|| ClientError::Connection("not connected".into()))
    }
}

/// Whether an idle connection is still open: nothing may be readable on it
/// between requests, so EOF or stray bytes both mean it is unusable.
fn is_alive(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut probe = [0u8; 1];
    let alive = matches!(stream.peek(&mut probe), Err(err) if err.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).is_ok() && alive
}

fn open(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let conn_err = |err: std::io::Error| ClientError::Connection(format!("{addr}: {err}"));
    let mut last = ClientError::Connection(format!("{addr}: no address resolved"));
    for sock in addr.to_socket_addrs().map_err(conn_err)? {
        match TcpStream::connect_timeout(&sock, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true).map_err(conn_err)?;
                stream.set_read_timeout(Some(timeout)).map_err(conn_err)?;
                stream.set_write_timeout(Some(timeout)).map_err(conn_err)?;
                return Ok(stream);
            }
            Err(err) => last = conn_err(err),
        }
    }
    Err(last)
}

fn read_reply(conn: &mut Conn) -> Result<Reply, ClientError> {
    let mut line = Vec::new();
    match conn.reader.read_until(b'\n', &mut line) {
        Ok(0) => Err(ClientError::Connection(format!(
            "{} closed the connection",
            conn.addr
        ))),
        Ok(_) if line.last() != Some(&b'\n') => Err(ClientError::Connection(format!(
            "{} closed the connection mid-reply",
            conn.addr
        ))),
        Ok(_) => {
            line.pop();
            Reply::parse(&line).map_err(ClientError::Protocol)
        }
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
            ClientError::Timeout(format!("no reply from {} in time", conn.addr)),
        ),
        Err(err) => Err(ClientError::Connection(format!("{}: {err}", conn.addr))),
    }
}

fn expect_ok(reply: Reply) -> Result<(), ClientError> {
    match reply {
        Reply::Ok => Ok(()),
        other => Err(unexpected(other)),
    }
}

fn unexpected(reply: Reply) -> ClientError {
    let mut line = Vec::new();
    reply.encode(&mut line);
    line.pop();
    ClientError::Protocol(format!(
        "unexpected reply: {}",
        String::from_utf8_lossy(&line)
    ))
}
