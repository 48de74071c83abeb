//! A blocking client for the plaintext protocol, reusing the server's codec
//! ([`Request::encode`], [`Reply::parse`]). The Python package wraps it.
//!
//! It follows `ERR NOT_LEADER` redirects (backing off when they loop), tries
//! the other addresses on `ERR NO_LEADER` and failed connections, until a
//! retry deadline. Every write goes out as `REQ <client_id> <seq> <write>`
//! (exactly-once), so a write whose reply was lost is resent with the same
//! seq until the deadline; [`ClientError::Indeterminate`] (which a
//! linearizability checker needs) only means no answer came in time.
//! [`Client::scan`] pages by itself; [`Client::watch`] gives a [`WatchStream`]
//! that resumes on another node after a failure, with no gap and no repeat.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::protocol::{
    Cad, Cas, Delete, Get, GetRev, MAX_CLIENT_ID, Ping, Reply, Req, Request, Scan, ScanPage, Set,
    StatusCmd, Watch, WatchEnd, WatchEvent,
};
use crate::state_machine::ScanItem;
use crate::types::LogIndex;

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
    /// A CAS or CAD whose expected revision was not the key's.
    #[error("revision conflict: the key is at revision {current_rev}")]
    Conflict { current_rev: LogIndex },
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
        Request::Ping(_) | Request::Status(_) | Request::Member(_) | Request::Transfer(_) => {
            return Ok(());
        }
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
    /// Exactly-once identity: every write is `REQ <client_id> <seq> ...`.
    client_id: String,
    next_seq: u64,
}

/// A client id unique enough across processes and clients of one process.
fn new_client_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("c{:x}-{:x}-{n:x}", nanos, std::process::id())
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
            client_id: new_client_id(),
            next_seq: 1,
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
        expect_ok(self.write(request)?)
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), ClientError> {
        let request = Request::Delete(Delete { key: key.to_vec() });
        expect_ok(self.write(request)?)
    }

    /// The value of `key` and the revision that last wrote it (linearizable).
    pub fn get_rev(&mut self, key: &[u8]) -> Result<Option<(LogIndex, Vec<u8>)>, ClientError> {
        let request = Request::GetRev(GetRev { key: key.to_vec() });
        match self.execute(&request)? {
            Reply::Value(raw) => Reply::split_rev(&raw)
                .map(Some)
                .ok_or_else(|| ClientError::Protocol("GETREV reply without a revision".into())),
            Reply::ValueRev(rev, value) => Ok(Some((rev, value))),
            Reply::NotFound => Ok(None),
            other => Err(unexpected(other)),
        }
    }

    /// Writes `value` if the key is at `expected_rev` (0: only if absent);
    /// returns the new revision, or [`ClientError::Conflict`].
    pub fn cas(
        &mut self,
        key: &[u8],
        value: &[u8],
        expected_rev: LogIndex,
    ) -> Result<LogIndex, ClientError> {
        let request = Request::Cas(Cas {
            key: key.to_vec(),
            expected: expected_rev,
            value: value.to_vec(),
        });
        expect_rev(self.write(request)?)
    }

    /// Deletes the key if it is at `expected_rev`; returns the revision of the delete.
    pub fn cad(&mut self, key: &[u8], expected_rev: LogIndex) -> Result<LogIndex, ClientError> {
        if expected_rev == 0 {
            return Err(ClientError::InvalidInput(
                "CAD needs the key's current revision (0 is never one)".into(),
            ));
        }
        let request = Request::Cad(Cad {
            key: key.to_vec(),
            expected: expected_rev,
        });
        expect_rev(self.write(request)?)
    }

    /// One page of a scan (see [`Client::scan`] for all of them).
    pub fn scan_page(
        &mut self,
        prefix: Option<&[u8]>,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<ScanPage, ClientError> {
        let request = Request::Scan(Scan {
            limit,
            prefix: prefix.map(<[u8]>::to_vec),
            after: after.map(<[u8]>::to_vec),
        });
        match self.execute(&request)? {
            Reply::Keys(page) => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Every key with `prefix` (all keys when `None`), in byte order, paging
    /// `page` keys at a time (each page is its own linearizable read).
    pub fn scan(
        &mut self,
        prefix: Option<&[u8]>,
        page: usize,
    ) -> Result<Vec<ScanItem>, ClientError> {
        let mut all = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let got = self.scan_page(prefix, after.as_deref(), page)?;
            after = got.entries.last().map(|e| e.0.clone());
            all.extend(got.entries);
            if !got.more || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// Follows every change to keys with `prefix` from `start_rev` (0: from
    /// now), resuming on another address after a failure.
    pub fn watch(&self, prefix: Option<&[u8]>, start_rev: LogIndex) -> WatchStream {
        WatchStream {
            addrs: self.addrs.clone(),
            current: self.current,
            options: self.options.clone(),
            prefix: prefix.map(<[u8]>::to_vec),
            start_rev,
            next_rev: start_rev,
            conn: None,
        }
    }

    /// Runs a write exactly once: as `REQ <id> <seq> <write>`, resent with
    /// the same seq after every lost or unknown answer until the deadline.
    fn write(&mut self, write: Request) -> Result<Reply, ClientError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let request = Request::Req(Req {
            client: self.client_id.clone().into_bytes(),
            seq,
            write: Box::new(write),
        });
        match self.execute(&request) {
            Ok(Reply::SessionExpired) => {
                // The write did not run under this seq; the session is gone,
                // so a new identity serves later writes.
                self.client_id = new_client_id();
                self.next_seq = 1;
                Err(ClientError::Indeterminate(
                    "the exactly-once session expired before the write was confirmed".into(),
                ))
            }
            other => other,
        }
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
    /// returns the raw replies in order. No redirects or retries once
    /// anything is sent; before that, an address that refuses the connection
    /// gives way to the next, each tried once.
    pub fn pipeline(&mut self, requests: &[Request]) -> Result<Vec<Reply>, ClientError> {
        for request in requests {
            validate(request)?;
        }
        let mut buf = Vec::new();
        for request in requests {
            request.encode(&mut buf);
        }
        let mut untried = self.addrs.len();
        while let Err(err) = self.connect().map(|_| ()) {
            untried -= 1;
            if untried == 0 || !matches!(err, ClientError::Connection(_)) {
                return Err(err);
            }
            self.rotate();
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
        // A plain write must not be resent after it may have arrived; a REQ
        // may, any number of times (it runs once).
        let is_write = request.is_write() && !matches!(request, Request::Req(_));
        let idempotent_write = matches!(request, Request::Req(_));
        let deadline = Instant::now() + self.options.retry_timeout;
        let mut backoff = Duration::from_millis(10);
        let mut redirects = 0usize;
        let mut unsure = false;
        let mut saw_no_leader = false;
        loop {
            // A REQ whose answer was lost counts as possibly applied (it is
            // reported as indeterminate below and resent).
            let error = match self.attempt(request, is_write || idempotent_write) {
                Attempt::Done(Err(ClientError::Indeterminate(reason))) if idempotent_write => {
                    unsure = true;
                    self.rotate();
                    ClientError::Indeterminate(reason)
                }
                Attempt::Done(result) => return result,
                Attempt::Retry(error) => error,
            };
            saw_no_leader |= error == ClientError::NoLeader;
            if Instant::now() + backoff >= deadline {
                return Err(match error {
                    ClientError::Indeterminate(_) => error,
                    // Some node answered: the cluster has no leader (the
                    // others may simply be down).
                    ClientError::Connection(_) if saw_no_leader && !unsure => ClientError::NoLeader,
                    error if unsure && idempotent_write => {
                        ClientError::Indeterminate(format!("no answer in time: {error}"))
                    }
                    error => error,
                });
            }
            // One redirect is followed at once; a second in a row means the
            // nodes disagree about the leader (an election): back off.
            let redirected = matches!(error, ClientError::NotLeader { .. });
            redirects = if redirected { redirects + 1 } else { 0 };
            if !redirected || redirects > 1 {
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
            Reply::NoLeader => {
                // This node may be cut off from a majority that has a leader.
                self.rotate();
                Attempt::Retry(ClientError::NoLeader)
            }
            Reply::Dropped(reason) => Attempt::Retry(ClientError::Server(reason)),
            // Not attempted: another node may have room (or, later, this one).
            Reply::NoSpace(reason) => {
                self.rotate();
                Attempt::Retry(ClientError::Server(format!("NOSPACE {reason}")))
            }
            Reply::Busy(reason) => Attempt::Retry(ClientError::Server(format!("BUSY {reason}"))),
            Reply::Unknown(reason) => Attempt::Done(Err(ClientError::Indeterminate(reason))),
            Reply::Conflict(current_rev) => {
                Attempt::Done(Err(ClientError::Conflict { current_rev }))
            }
            Reply::Error(reason) if reason == "read timed out" => {
                Attempt::Retry(ClientError::Timeout(reason))
            }
            // A membership change refused only because the new leader has not
            // committed in its term yet, or another change is pending: nothing
            // was proposed, so it is tried again until the deadline.
            Reply::Error(reason)
                if matches!(request, Request::Member(_)) && reason.contains("; retry") =>
            {
                Attempt::Retry(ClientError::Server(reason))
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
            if let Some((n, mut page)) = ScanPage::parse_header(&line) {
                for _ in 0..n {
                    let entry = read_line(conn)?;
                    let item = ScanPage::parse_line(&entry)
                        .ok_or_else(|| ClientError::Protocol("bad SCAN line".into()))?;
                    page.entries.push(item);
                }
                return Ok(Reply::Keys(page));
            }
            Reply::parse(&line).map_err(ClientError::Protocol)
        }
        Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Err(
            ClientError::Timeout(format!("no reply from {} in time", conn.addr)),
        ),
        Err(err) => Err(ClientError::Connection(format!("{}: {err}", conn.addr))),
    }
}

/// Reads one more line of a multi-line reply.
fn read_line(conn: &mut Conn) -> Result<Vec<u8>, ClientError> {
    let mut line = Vec::new();
    match conn.reader.read_until(b'\n', &mut line) {
        Ok(_) if line.last() == Some(&b'\n') => {
            line.pop();
            Ok(line)
        }
        Ok(_) => Err(ClientError::Connection(format!(
            "{} closed the connection mid-reply",
            conn.addr
        ))),
        Err(err) => Err(ClientError::Connection(format!("{}: {err}", conn.addr))),
    }
}

fn expect_rev(reply: Reply) -> Result<LogIndex, ClientError> {
    match reply {
        Reply::OkRev(rev) => Ok(rev),
        Reply::Conflict(current_rev) => Err(ClientError::Conflict { current_rev }),
        other => Err(unexpected(other)),
    }
}

/// A watch that survives node failures: after a broken stream it resumes on
/// the next address at its last revision + 1, so the changes it yields have
/// no gap and no repeat. Iterate with [`WatchStream::next_event`].
pub struct WatchStream {
    addrs: Vec<String>,
    current: usize,
    options: ClientOptions,
    prefix: Option<Vec<u8>>,
    start_rev: LogIndex,
    /// The next revision wanted (0 until the first `WATCHING` when started "from now").
    next_rev: LogIndex,
    conn: Option<Conn>,
}

impl WatchStream {
    /// The next change (or progress notice). Gives up with the last error
    /// when no node could serve the watch within `retry_timeout`.
    pub fn next_event(&mut self) -> Result<WatchEvent, ClientError> {
        let deadline = Instant::now() + self.options.retry_timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let error = match self.try_next() {
                Ok(event) => return Ok(event),
                Err(error) => error,
            };
            self.conn = None;
            self.current = (self.current + 1) % self.addrs.len();
            if matches!(error, ClientError::Conflict { .. }) || Instant::now() + backoff >= deadline
            {
                return Err(error);
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The revision the stream resumes at.
    pub fn next_rev(&self) -> LogIndex {
        self.next_rev
    }

    fn try_next(&mut self) -> Result<WatchEvent, ClientError> {
        if self.conn.is_none() {
            let addr = self.addrs[self.current].clone();
            // Progress comes every second: wait a few for a line.
            let stream = open(&addr, self.options.timeout.max(Duration::from_secs(3)))?;
            let reader = stream
                .try_clone()
                .map_err(|err| ClientError::Connection(err.to_string()))?;
            let mut conn = Conn {
                addr,
                reader: BufReader::new(reader),
                writer: stream,
            };
            let mut line = Vec::new();
            Request::Watch(Watch {
                from_rev: self.next_rev,
                prefix: self.prefix.clone(),
            })
            .encode(&mut line);
            conn.writer
                .write_all(&line)
                .map_err(|err| ClientError::Connection(err.to_string()))?;
            match read_reply(&mut conn)? {
                Reply::Watching(rev) => self.next_rev = rev,
                Reply::Compacted(oldest) => {
                    return Err(ClientError::Server(format!(
                        "history before revision {oldest} is compacted on {}",
                        conn.addr
                    )));
                }
                Reply::NotLeader(_) | Reply::NoLeader => {
                    return Err(ClientError::NoLeader);
                }
                other => return Err(unexpected(other)),
            }
            self.conn = Some(conn);
        }
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| ClientError::Connection("not connected".into()))?;
        let line = read_line(conn)?;
        match WatchEvent::parse(&line).map_err(ClientError::Protocol)? {
            WatchEvent::Change { rev, key, value } => {
                self.next_rev = rev + 1;
                Ok(WatchEvent::Change { rev, key, value })
            }
            WatchEvent::Progress(rev) => {
                self.next_rev = self.next_rev.max(rev + 1);
                Ok(WatchEvent::Progress(rev))
            }
            WatchEvent::End(WatchEnd::Compacted(oldest)) => Err(ClientError::Server(format!(
                "history before revision {oldest} is compacted"
            ))),
            WatchEvent::End(end) => Err(ClientError::Connection(format!("watch ended: {end:?}"))),
        }
    }

    /// The revision the watch was asked to start at.
    pub fn start_rev(&self) -> LogIndex {
        self.start_rev
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::{BufRead, Write};

    use super::*;

    /// A node that answers each request line with the next of `answers`;
    /// returns its address and the lines it got.
    fn node(answers: Vec<&'static str>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let mut seen = Vec::new();
            for answer in answers {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                seen.push(line.trim_end().to_string());
                writer.write_all(format!("{answer}\n").as_bytes()).unwrap();
            }
            seen
        });
        (addr, handle)
    }

    fn remove() -> Request {
        Request::parse(b"MEMBER REMOVE n3").unwrap().unwrap()
    }

    /// A new leader refuses membership changes until it has committed in its
    /// term; nothing was proposed, so the client asks again.
    #[test]
    fn a_membership_change_refused_for_now_is_retried() {
        let (addr, node) = node(vec![
            "ERR the leader has not committed an entry of its term yet; retry",
            "ERR a membership change is in progress; retry when it is committed",
            "OK",
        ]);
        let mut client = Client::new(vec![addr], ClientOptions::default()).unwrap();
        assert_eq!(client.execute(&remove()).unwrap(), Reply::Ok);
        assert_eq!(node.join().unwrap().len(), 3);
    }

    #[test]
    fn a_membership_change_refused_for_good_is_not_retried() {
        let (addr, node) = node(vec!["ERR unknown member n3", "OK"]);
        let mut client = Client::new(vec![addr], ClientOptions::default()).unwrap();
        let err = client.execute(&remove()).unwrap_err();
        assert_eq!(err, ClientError::Server("unknown member n3".into()));
        drop(client);
        assert_eq!(node.join().unwrap(), vec!["MEMBER REMOVE n3".to_string()]);
    }
}
