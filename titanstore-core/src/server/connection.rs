//! One client connection: pipelined requests, replies in order.

use futures_util::{FutureExt, StreamExt, stream::FuturesOrdered};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::FramedRead;

use super::ServerConfig;
use crate::node::NodeHandle;
use crate::protocol::{LineCodec, LineError, Reply, Request};

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
    loop {
        let can_read = reading && pending.len() < config.max_pipeline;
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
                    Ok(Some(request)) => pending.push_back(handle(&node, request)),
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
        if !reading && pending.is_empty() {
            write_half.shutdown().await?;
            return Ok(());
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
