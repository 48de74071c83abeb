//! The receiving side: checks a stream of chunks and writes it to the spool
//! file, from the start or from where an earlier send of the same image
//! stopped.

use std::sync::Arc;

use titanstore_proto::SnapshotChunk;
use tonic::Status;

use super::super::convert::{self, ConvertError};
use super::super::{Envelope, ImageCounters};
use super::spool::{Part, Spool};
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
/// deletes what was received of it; a stream that only stops early leaves
/// what arrived in the spool file for the next send.
pub(in crate::transport) async fn receive(
    stream: &mut tonic::Streaming<SnapshotChunk>,
    me: &str,
    spool: &Arc<Spool>,
    counters: Option<&ImageCounters>,
) -> Result<Envelope, ReceiveError> {
    let mut chunk = next_chunk(stream).await?;
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
    let part = if chunk.offset == 0 {
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
        blocking(move || spool.begin(id, prefix)).await??
    } else {
        let spool = Arc::clone(spool);
        let offset = chunk.offset;
        match blocking(move || spool.resume(id, offset)).await?? {
            Some(part) => {
                tracing::info!(from = %from, index = id.last_index, offset,
                    total = id.total_len, "resuming a snapshot image where its last send stopped");
                if let Some(counters) = counters {
                    counters.resumes.inc();
                }
                part
            }
            None => return Err(ReceiveError::NothingToResume(offset)),
        }
    };
    let (part, filled) = fill(part, chunk, stream, counters).await;
    // Without the part, a file task failed and took it with it.
    let Some(part) = part else {
        return filled.and(Err(ReceiveError::Worker(
            "a file task lost the image".into(),
        )));
    };
    match filled {
        Ok(()) => {}
        Err(err @ (ReceiveError::Truncated | ReceiveError::Stream(_))) if part.len > 0 => {
            tracing::info!(
                index = part.id.last_index,
                bytes = part.len,
                total = part.id.total_len,
                "a snapshot image's send broke off: keeping what arrived for the next send"
            );
            let spool = Arc::clone(spool);
            blocking(move || spool.keep(part)).await?;
            return Err(err);
        }
        Err(err) => {
            blocking(move || part.discard()).await?;
            return Err(err);
        }
    }
    let total = part.id.total_len;
    let data = blocking(move || part.finish())
        .await?
        .map_err(|err| match err.kind() {
            std::io::ErrorKind::OutOfMemory => ReceiveError::TooLarge(total),
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

/// The next chunk; a stream that ends, or waits longer than
/// [`CHUNK_TIMEOUT`], is cut off (what arrived is kept).
async fn next_chunk(
    stream: &mut tonic::Streaming<SnapshotChunk>,
) -> Result<SnapshotChunk, ReceiveError> {
    tokio::time::timeout(CHUNK_TIMEOUT, stream.message())
        .await
        .map_err(|_| ReceiveError::Truncated)??
        .ok_or(ReceiveError::Truncated)
}

/// Appends `chunk` and the chunks after it to `part` until the last one,
/// then checks the whole image. The part comes back with the outcome,
/// unless a file task failed with it.
async fn fill(
    mut part: Part,
    mut chunk: SnapshotChunk,
    stream: &mut tonic::Streaming<SnapshotChunk>,
    counters: Option<&ImageCounters>,
) -> (Option<Part>, Result<(), ReceiveError>) {
    let total = part.id.total_len;
    loop {
        let at = part.len;
        if chunk.offset != at {
            let err = ReceiveError::OutOfOrder {
                got: chunk.offset,
                expected: at,
            };
            return (Some(part), Err(err));
        }
        let n = chunk.data.len() as u64;
        if at + n > total {
            return (Some(part), Err(ReceiveError::Overrun { at, total }));
        }
        let data = std::mem::take(&mut chunk.data);
        let appended = blocking(move || {
            let result = part.append(&data);
            (part, result)
        })
        .await;
        part = match appended {
            Ok((part, Ok(()))) => part,
            Ok((part, Err(err))) => return (Some(part), Err(ReceiveError::Spool(err))),
            Err(err) => return (None, Err(err)),
        };
        if let Some(counters) = counters {
            counters.received_bytes.inc_by(n);
        }
        if chunk.done {
            break;
        }
        chunk = match next_chunk(stream).await {
            Ok(chunk) => chunk,
            Err(err) => return (Some(part), Err(err)),
        };
    }
    if part.len != total {
        let err = ReceiveError::ShortImage {
            at: part.len,
            total,
        };
        return (Some(part), Err(err));
    }
    let checked = blocking(move || {
        let crc = part.checksum();
        (part, crc)
    })
    .await;
    match checked {
        Ok((part, Ok(got))) if got == part.id.crc32c => (Some(part), Ok(())),
        Ok((part, Ok(got))) => {
            let want = part.id.crc32c;
            (Some(part), Err(ReceiveError::Checksum { got, want }))
        }
        Ok((part, Err(err))) => (Some(part), Err(ReceiveError::Spool(err))),
        Err(err) => (None, Err(err)),
    }
}
