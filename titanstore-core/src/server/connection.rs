//! One client connection: pipelined requests, replies in order.
//!
//! Requests on one connection take effect in the order they were sent: a run
//! of writes (or of reads) is pipelined, but a read waits for the writes sent
//! before it to finish, and a write for the reads before it. So a pipelined
//! `SET k v` then `GET k` always reads `v`.

use futures_util::{FutureExt, StreamExt, stream::FuturesOrdered};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::watch;
use tokio_util::codec::FramedRead;

use super::ServerConfig;
use crate::node::NodeHandle;
use crate::protocol::{LineCodec, LineError, Member, Reply, Request, Watch, WatchEvent};

type ReplyFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send>>;

/// Serves one connection until the client closes it, sends a line that is too
/// long, or the server shuts down.
pub(super) async fn serve(
    socket: TcpStream,
    node: NodeHandle,
    config: &ServerConfig,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (read_half, mut write_half) = socket.into_split();
    let mut lines = FramedRead::new(read_half, LineCodec::new(config.max_line_bytes));
    let mut pending: FuturesOrdered<ReplyFuture> = FuturesOrdered::new();
    let mut out = Vec::with_capacity(4096);
    let mut reading = true;
    // What the requests in flight are, and a request held back until they finish.
    let mut in_flight = Kind::Neutral;
    let mut held: Option<Request> = None;
    loop {
        if pending.is_empty() {
            in_flight = Kind::Neutral;
            match held.take() {
                Some(Request::Watch(watch)) => {
                    // Every earlier reply is written: the connection becomes a stream.
                    let go_on =
                        stream_watch(&node, watch, &mut lines, &mut write_half, &mut stop).await?;
                    if !go_on {
                        write_half.shutdown().await?;
                        return Ok(());
                    }
                }
                Some(request) => {
                    in_flight = Kind::of(&request);
                    pending.push_back(handle(&node, request));
                }
                None => {}
            }
        }
        let can_read = reading && held.is_none() && pending.len() < config.max_pipeline;
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
            }
            line = lines.next(), if can_read => match line {
                None => reading = false,
                Some(Ok(line)) => match Request::parse(&line) {
                    Ok(None) => {}
                    Ok(Some(request)) => {
                        let kind = Kind::of(&request);
                        if matches!(request, Request::Watch(_)) || in_flight.conflicts_with(kind) {
                            held = Some(request);
                        } else {
                            if kind != Kind::Neutral {
                                in_flight = kind;
                            }
                            pending.push_back(handle(&node, request));
                        }
                    }
                    Err(err) => {
                        let reply = Reply::from(err);
                        pending.push_back(Box::pin(async move { reply }));
                    }
                },
                Some(Err(LineError::TooLong)) => {
                    // Owe the earlier replies first, then refuse and close.
                    while let Some(reply) = pending.next().await {
                        reply.encode(&mut out);
                    }
                    Reply::Error("line too long".into()).encode(&mut out);
                    write_half.write_all(&out).await?;
                    write_half.shutdown().await?;
                    return Ok(());
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

fn handle(node: &NodeHandle, request: Request) -> ReplyFuture {
    match request {
        Request::Ping(_) => Box::pin(async { Reply::Pong }),
        request => {
            let node = node.clone();
            Box::pin(async move { node.call(request).await })
        }
    }
}
