//! The receiving side: checks a stream of chunks and writes it to the spool
//! file, from the start or from where an earlier send of the same image
//! stopped.

use std::sync::Arc;

use titanstore_proto::SnapshotChunk;
use tonic::Status;

use super::super::convert::{self, ConvertError};
use super::super::{Envelope, ImageCounters};
use super::spool::{Receiving, Spool};
use super::{CHUNK_TIMEOUT, ImageId};
use crate::raft::{Message, MessageBody};
use crate::storage::ImagePrefix;
use crate::types::SnapshotMeta;

/// Why a received image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the stream ended before the image did")]
    Truncated,
    #[error("the last chunk ends the image at {at}, short of its {total} bytes")]
    ShortImage { at: u64, total: u64 },
    #[error("the image's head does not match its header")]
    HeadMismatch,
    #[error("chunk at offset {got}, expected {expected}")]
    OutOfOrder { got: u64, expected: u64 },
    #[error("image of {total} bytes overruns at {at}")]
    Overrun { at: u64, total: u64 },
    #[error("image of {0} bytes does not fit in memory")]
    TooLarge(u64),
    #[error("checksum mismatch: image has {got:08x}, sender said {want:08x}")]
    Checksum { got: u32, want: u32 },
    #[error("image addressed to {to}, this node is {me}")]
    NotMine { to: String, me: String },
    #[error("a send resumes at {0}, but this node holds no such part of that image")]
    NothingToResume(u64),
    #[error("the image's file (snapshot.recv): {0}")]
    Spool(#[from] std::io::Error),
    #[error("a file task of the receiver failed: {0}")]
    Worker(String),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("stream failed: {0}")]
    Stream(#[from] Status),
    #[error("the sender offered an image again: this send of it is over")]
    Superseded,
}

/// Runs the file work `f` off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ReceiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| ReceiveError::Worker(err.to_string()))
}

/// Reads one image from `stream` into `spool`, from the start or from where
/// an earlier send of it stopped, and returns it as the `InstallSnapshot`
/// its sender's core asked for. Every check fails the whole image and
/// deletes what was received of it; a stream that only stops early, or is
/// dropped, leaves what arrived in the spool file for the next send.
pub(in crate::transport) async fn receive(
    stream: &mut tonic::Streaming<SnapshotChunk>,
    me: &str,
    spool: &Arc<Spool>,
    counters: Option<&ImageCounters>,
) -> Result<Envelope, ReceiveError> {
    let receiving = spool.receiving();
    let mut chunk = next_chunk(stream, &receiving).await?;
    if chunk.to != me {
        return Err(ReceiveError::NotMine {
            to: chunk.to,
            me: me.to_string(),
        });
    }
    let id = ImageId {
        last_index: chunk.last_index,
        last_term: chunk.last_term,
        total_len: chunk.total_len,
        crc32c: chunk.crc32c,
    };
    let meta = SnapshotMeta {
        last_index: chunk.last_index,
        last_term: chunk.last_term,
        config: convert::config_from_wire(&chunk.config)?,
    };
    let (from, to, term) = (
        std::mem::take(&mut chunk.from),
        std::mem::take(&mut chunk.to),
        chunk.term,
    );
    let cluster_id = std::mem::take(&mut chunk.cluster_id);
    if chunk.offset == 0 {
        // A send from the start ends what was held, whether or not its image
        // is taken.
        let held = Arc::clone(spool);
        blocking(move || held.clear()).await?;
        match crate::storage::decode_snapshot_head(&chunk.head) {
            Some((head_meta, len)) if head_meta == meta && len == id.total_len => {}
            _ => return Err(ReceiveError::HeadMismatch),
        }
        tracing::info!(from = %from, index = id.last_index, total = id.total_len,
            "receiving a snapshot image");
        let prefix = ImagePrefix {
            meta: meta.clone(),
            head: std::mem::take(&mut chunk.head).to_vec(),
            image_len: id.total_len,
            crc32c: id.crc32c,
        };
        let spool = Arc::clone(spool);
        blocking(move || spool.begin(id, prefix)).await??;
    } else {
        let held = Arc::clone(spool);
        let offset = chunk.offset;
        if !blocking(move || held.resume(id, offset)).await?? {
            return Err(ReceiveError::NothingToResume(offset));
        }
        tracing::info!(from = %from, index = id.last_index, offset,
            total = id.total_len, "resuming a snapshot image where its last send stopped");
        if let Some(counters) = counters {
            counters.resumes.inc();
        }
    }
    let filled = fill(spool, &receiving, id, chunk, stream, counters).await;
    let held = Arc::clone(spool);
    match filled {
        Ok(()) => {}
        Err(
            err @ (ReceiveError::Truncated | ReceiveError::Stream(_) | ReceiveError::Superseded),
        ) => {
            if let Some(bytes) = blocking(move || held.keep(id)).await? {
                tracing::info!(
                    index = id.last_index,
                    bytes,
                    total = id.total_len,
                    "a snapshot image's send broke off: keeping what arrived for the next send"
                );
            }
            return Err(err);
        }
        Err(err) => {
            blocking(move || held.discard(id)).await?;
            return Err(err);
        }
    }
    let data = blocking(move || held.finish(id))
        .await?
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::OutOfMemory => ReceiveError::TooLarge(id.total_len),
            _ => ReceiveError::Spool(err),
        })?;
    Ok(Envelope {
        cluster_id,
        msg: Message {
            from,
            to,
            body: MessageBody::InstallSnapshot { term, meta, data },
        },
    })
}

/// The next chunk; a stream that ends, waits longer than [`CHUNK_TIMEOUT`],
/// or is superseded by a new offer, is cut off (what arrived is kept).
async fn next_chunk(
    stream: &mut tonic::Streaming<SnapshotChunk>,
    receiving: &Receiving,
) -> Result<SnapshotChunk, ReceiveError> {
    tokio::select! {
        next = tokio::time::timeout(CHUNK_TIMEOUT, stream.message()) => next
            .map_err(|_| ReceiveError::Truncated)??
            .ok_or(ReceiveError::Truncated),
        () = receiving.stopped() => Err(ReceiveError::Superseded),
    }
}

/// Writes `chunk`, the first of this send, and the chunks after it to the
/// part of image `id` in `spool` until the last one, then checks the whole
/// image.
async fn fill(
    spool: &Arc<Spool>,
    receiving: &Receiving,
    id: ImageId,
    mut chunk: SnapshotChunk,
    stream: &mut tonic::Streaming<SnapshotChunk>,
    counters: Option<&ImageCounters>,
) -> Result<(), ReceiveError> {
    let total = id.total_len;
    let mut at = chunk.offset;
    loop {
        if chunk.offset != at {
            return Err(ReceiveError::OutOfOrder {
                got: chunk.offset,
                expected: at,
            });
        }
        let n = chunk.data.len() as u64;
        if at + n > total {
            return Err(ReceiveError::Overrun { at, total });
        }
        let data = std::mem::take(&mut chunk.data);
        let held = Arc::clone(spool);
        blocking(move || held.append(id, at, &data)).await??;
        at += n;
        if let Some(counters) = counters {
            counters.received_bytes.inc_by(n);
        }
        if chunk.done {
            break;
        }
        chunk = next_chunk(stream, receiving).await?;
    }
    if at != total {
        return Err(ReceiveError::ShortImage { at, total });
    }
    let held = Arc::clone(spool);
    let got = blocking(move || held.checksum(id)).await??;
    if got != id.crc32c {
        return Err(ReceiveError::Checksum {
            got,
            want: id.crc32c,
        });
    }
    Ok(())
}
