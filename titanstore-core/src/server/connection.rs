//! One client connection: pipelined requests, replies in order.
//!
//! Requests on one connection take effect in the order they were sent: a run
//! of writes (or of reads) is pipelined, but a read waits for the writes sent
//! before it to finish, and a write for the reads before it. So a pipelined
//! `SET k v` then `GET k` always reads `v`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt, stream::FuturesOrdered};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;

use super::Shared;
use crate::metrics::COMMANDS;
use crate::node::NodeHandle;
use crate::protocol::{LineCodec, LineError, Member, Reply, Request, Watch, WatchEvent};

type ReplyFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>;

/// Serves one connection until the client closes it, sends a line that is too
/// long, stays idle past the timeout, or the server shuts down.
pub(super) async fn serve(
    socket: TcpStream,
    shared: &Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let config = &shared.config;
    let (read_half, mut write_half) = socket.into_split();
    let mut lines = FramedRead::new(read_half, LineCodec::new(config.max_line_bytes));
    let mut pending: FuturesOrdered<ReplyFuture> = FuturesOrdered::new();
    let mut out = Vec::with_capacity(4096);
    let mut reading = true;
    // What the requests in flight are, and a request held back until they finish.
    let mut in_flight = Kind::Neutral;
    let mut held: Option<(Request, usize)> = None;
    let idle = tokio::time::sleep(config.idle_timeout);
    tokio::pin!(idle);
    loop {
        if pending.is_empty() {
            in_flight = Kind::Neutral;
            match held.take() {
                Some((Request::Watch(watch), _)) => {
                    // Every earlier reply is written: the connection becomes a stream.
                    let go_on =
                        stream_watch(&shared.node, watch, &mut lines, &mut write_half, &mut stop)
                            .await?;
                    if !go_on {
                        write_half.shutdown().await?;
                        return Ok(());
                    }
                    idle.as_mut().reset(Instant::now() + config.idle_timeout);
                }
                Some((request, bytes)) => {
                    in_flight = Kind::of(&request);
                    pending.push_back(handle(shared, request, bytes));
                }
                None => {}
            }
        }
        let can_read = reading && held.is_none() && pending.len() < config.max_pipeline;
        let is_idle = pending.is_empty() && held.is_none();
        tokio::select! {
            biased;
            _ = stop.changed(), if reading => {
                reading = false;
            }
            Some(reply) = pending.next(), if !pending.is_empty() => {
                reply.encode(&mut out);
                // Batch every reply that is already done into one write.
                while let Some(Some(reply)) = pending.next().now_or_never() {
                    reply.encode(&mut out);
                }
                write_half.write_all(&out).await?;
                out.clear();
                idle.as_mut().reset(Instant::now() + config.idle_timeout);
            }
            () = &mut idle, if is_idle && reading => {
                shared.metrics.connections_idle_closed.inc();
                let secs = config.idle_timeout.as_secs_f64();
                let notice = format!("ERR idle for {secs} s (--client-idle-timeout); closing\n");
                write_half.write_all(notice.as_bytes()).await?;
                return close_draining(write_half, lines).await;
            }
            line = lines.next(), if can_read => match line {
                None => reading = false,
                Some(Ok(line)) => {
                    idle.as_mut().reset(Instant::now() + config.idle_timeout);
                    match Request::parse(&line) {
                        Ok(None) => {}
                        Ok(Some(request)) => {
                            let kind = Kind::of(&request);
                            let bytes = line.len();
                            if matches!(request, Request::Watch(_)) || in_flight.conflicts_with(kind) {
                                held = Some((request, bytes));
                            } else {
                                if kind != Kind::Neutral {
                                    in_flight = kind;
                                }
                                pending.push_back(handle(shared, request, bytes));
                            }
                        }
                        Err(err) => {
                            shared.metrics.request_done(COMMANDS.len() - 1, Duration::ZERO);
                            let reply = Reply::from(err);
                            pending.push_back(Box::pin(async move { reply }));
                        }
                    }
                }
                Some(Err(LineError::TooLong)) => {
                    // Owe the earlier replies first, then refuse and close.
                    while let Some(reply) = pending.next().await {
                        reply.encode(&mut out);
                    }
                    Reply::Error("line too long".into()).encode(&mut out);
                    write_half.write_all(&out).await?;
                    return close_draining(write_half, lines).await;
                }
                Some(Err(LineError::Io(err))) => return Err(err),
            },
        }
        if !reading && pending.is_empty() && held.is_none() {
            write_half.shutdown().await?;
            return Ok(());
        }
    }
}

/// Most unread input discarded, and longest wait, before a refused
/// connection is dropped.
const DRAIN_BYTES: usize = 64 << 20;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Closes after a final error line so that the client reads it: the write
/// side is shut down first (FIN after the reply), then input the client is
/// still sending is read and discarded for a moment. Closing a socket with
/// unread input would send a reset, and a reset can discard the reply
/// before the client has read it.
async fn close_draining(
    mut write_half: OwnedWriteHalf,
    lines: FramedRead<OwnedReadHalf, LineCodec>,
) -> std::io::Result<()> {
    write_half.shutdown().await?;
    let mut read_half = lines.into_inner();
    let mut sink = vec![0u8; 64 * 1024];
    let mut drained = 0;
    let deadline = Instant::now() + DRAIN_TIME;
    while drained < DRAIN_BYTES {
        match tokio::time::timeout_at(deadline, read_half.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
    Ok(())
}

/// Whether a request reads or writes the store (for ordering on a connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Neutral,
    Read,
    Write,
}

impl Kind {
    fn of(request: &Request) -> Kind {
        match request {
            request if request.is_write() => Kind::Write,
            Request::Get(_)
            | Request::Status(_)
            | Request::GetRev(_)
            | Request::Scan(_)
            | Request::Member(Member::List) => Kind::Read,
            _ => Kind::Neutral,
        }
    }

    fn conflicts_with(self, next: Kind) -> bool {
        self != Kind::Neutral && next != Kind::Neutral && self != next
    }
}

/// Runs a watch on the connection: its reply, then its stream until the
/// stream ends, the client goes away or the server stops. Returns whether
/// the connection goes on (only when the watch was refused, e.g. COMPACTED).
async fn stream_watch(
    node: &NodeHandle,
    watch: Watch,
    lines: &mut FramedRead<OwnedReadHalf, LineCodec>,
    write_half: &mut OwnedWriteHalf,
    stop: &mut watch::Receiver<bool>,
) -> std::io::Result<bool> {
    let (reply, events) = node.watch(watch).await;
    let mut out = Vec::with_capacity(4096);
    reply.encode(&mut out);
    write_half.write_all(&out).await?;
    let Some(mut events) = events else {
        return Ok(true);
    };
    loop {
        out.clear();
        tokio::select! {
            biased;
            _ = stop.changed() => {
                write_half.write_all(b"ERR node is shutting down\n").await?;
                return Ok(false);
            }
            event = events.recv() => {
                let Some(event) = event else {
                    write_half.write_all(b"ERR node is shutting down\n").await?;
                    return Ok(false);
                };
                let mut end = matches!(event, WatchEvent::End(_));
                event.encode(&mut out);
                // Batch what is already buffered into one write.
                while !end && out.len() < 64 * 1024 && let Ok(event) = events.try_recv() {
                    end = matches!(event, WatchEvent::End(_));
                    event.encode(&mut out);
                }
                write_half.write_all(&out).await?;
                if end {
                    return Ok(false);
                }
            }
            line = lines.next() => match line {
                // Lines sent while streaming are ignored; a close ends the watch.
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return Ok(false),
            },
        }
    }
}

/// Starts a request; its reply future also books its time and releases
/// its bytes from the server's budget. Past the budget: `ERR BUSY`.
fn handle(shared: &Arc<Shared>, request: Request, bytes: usize) -> ReplyFuture {
    let command = command_index(&request);
    let budget = shared.config.max_buffered_bytes;
    if shared.buffered.fetch_add(bytes, Ordering::AcqRel) + bytes > budget {
        shared.buffered.fetch_sub(bytes, Ordering::AcqRel);
        shared.metrics.busy.inc();
        return Box::pin(async {
            Reply::Busy("the node holds its limit of request bytes in flight; retry later".into())
        });
    }
    let shared = Arc::clone(shared);
    let started = Instant::now();
    Box::pin(async move {
        let reply = match request {
            Request::Ping(_) => Reply::Pong,
            request => shared.node.call(request).await,
        };
        shared.buffered.fetch_sub(bytes, Ordering::AcqRel);
        shared.metrics.request_done(command, started.elapsed());
        reply
    })
}

/// The request's label in [`COMMANDS`].
fn command_index(request: &Request) -> usize {
    match request {
        Request::Get(_) => 0,
        Request::Set(_) => 1,
        Request::Delete(_) => 2,
        Request::Ping(_) => 3,
        Request::Status(_) => 4,
        Request::Member(_) => 5,
        Request::Transfer(_) => 6,
        Request::GetRev(_) => 7,
        Request::Cas(_) => 8,
        Request::Cad(_) => 9,
        Request::Scan(_) => 10,
        Request::Watch(_) => 11,
        Request::Req(_) => 12,
    }
}
