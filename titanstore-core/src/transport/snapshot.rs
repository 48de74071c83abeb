//! Snapshot images between nodes: chunked, checksummed, one at a time.
//!
//! The core asks for an `InstallSnapshot` with an empty image; the peer task
//! hands it here. The image is read from the sender's disk once per send and
//! streamed on its own gRPC call (`Snapshot`) in [`CHUNK_BYTES`] pieces, so
//! messages to the same peer never queue behind it and HTTP/2 flow control
//! paces it: an image of any size travels, with no message cap. The receiver
//! checks order, length and CRC-32C before its node sees the image.
//!
//! A peer gets one image at a time: requests while one is on its way are
//! dropped, and so are repeats of an image just delivered, for a while (the
//! follower is still decoding and saving it; the core asks again on a timer).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use titanstore_proto::SnapshotChunk;
use titanstore_proto::raft_client::RaftClient;
use tonic::Status;
use tonic::transport::Channel;

use super::convert::{self, ConvertError};
use super::peer::SnapshotSource;
use super::{Envelope, error_chain};
use crate::raft::{Message, MessageBody};
use crate::types::{LogIndex, NodeId, SnapshotMeta, Term};

/// Bytes of image per chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
/// How long, at least, a delivered image is not sent again.
const REPEAT_PAUSE: Duration = Duration::from_secs(10);

/// What a peer's sender knows about images it sends to that peer.
#[derive(Default)]
pub(super) struct SnapshotSends {
    state: Mutex<SendState>,
}

#[derive(Default)]
struct SendState {
    busy: bool,
    /// The last image delivered: its index, when, and how long it took.
    delivered: Option<(LogIndex, Instant, Duration)>,
}

impl SnapshotSends {
    /// Whether an image up to `index` may start now; if so the caller owns
    /// the one send slot until [`SnapshotSends::finish`].
    fn try_start(&self, index: LogIndex) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.busy {
            return false;
        }
        if let Some((done, at, took)) = state.delivered
            && done >= index
            && at.elapsed() < REPEAT_PAUSE.max(took * 4)
        {
            return false;
        }
        state.busy = true;
        true
    }

    /// The connection to the peer was made again (it may have restarted,
    /// losing what it had not installed): a delivered image may go again.
    pub(super) fn reconnected(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.delivered = None;
        }
    }

    fn finish(&self, delivered: Option<(LogIndex, Duration)>) {
        if let Ok(mut state) = self.state.lock() {
            state.busy = false;
            if let Some((index, took)) = delivered {
                state.delivered = Some((index, Instant::now(), took));
            }
        }
    }
}

/// Starts sending the image `msg` (an `InstallSnapshot`) asks for, unless
/// one is already on its way to that peer or was just delivered.
pub(super) fn start_send(
    client: RaftClient<Channel>,
    msg: Message,
    cluster_id: Arc<str>,
    snapshots: Arc<dyn SnapshotSource>,
    sends: Arc<SnapshotSends>,
) {
    let MessageBody::InstallSnapshot { term, meta, .. } = msg.body else {
        return;
    };
    if !sends.try_start(meta.last_index) {
        tracing::debug!(peer = %msg.to, index = meta.last_index,
            "an image is on its way or was just delivered: not sent again yet");
        return;
    }
    tokio::spawn(async move {
        // Frees the send slot even if this task is cancelled or panics.
        let mut slot = Slot {
            sends,
            delivered: None,
        };
        let started = Instant::now();
        let peer = msg.to.clone();
        let header = Header {
            from: msg.from,
            to: msg.to,
            cluster_id,
            term,
        };
        slot.delivered = match send(client, header, meta.last_index, snapshots).await {
            Ok((index, bytes)) => {
                let took = started.elapsed();
                tracing::info!(peer = %peer, index, bytes, millis = took.as_millis() as u64,
                    "snapshot image delivered");
                Some((index, took))
            }
            Err(why) => {
                tracing::warn!(peer = %peer, %why, "snapshot image not delivered");
                None
            }
        };
    });
}

/// Holds a peer's one send slot; gives it back when dropped.
struct Slot {
    sends: Arc<SnapshotSends>,
    delivered: Option<(LogIndex, Duration)>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.sends.finish(self.delivered.take());
    }
}

/// Who an image goes to, and the term of the leader sending it.
struct Header {
    from: NodeId,
    to: NodeId,
    cluster_id: Arc<str>,
    term: Term,
}

/// Loads the newest image (at least `index`) and cuts it into chunks off the
/// async threads, then streams it. Returns the index and size delivered.
async fn send(
    mut client: RaftClient<Channel>,
    header: Header,
    index: LogIndex,
    snapshots: Arc<dyn SnapshotSource>,
) -> Result<(LogIndex, usize), String> {
    let prepared = tokio::task::spawn_blocking(move || {
        let snapshot = match snapshots.latest()? {
            Some(snapshot) if snapshot.meta.last_index >= index => snapshot,
            _ => return Err(format!("no snapshot at or after index {index} on disk")),
        };
        let len = snapshot.data.len();
        let data = Bytes::from_owner(Image(Arc::clone(&snapshot)));
        let chunks = chunks(&header, &snapshot.meta, data).map_err(|err| err.to_string())?;
        Ok((snapshot.meta.last_index, len, chunks))
    });
    let (index, len, chunks) = prepared
        .await
        .map_err(|err| format!("snapshot loader failed: {err}"))??;
    client
        .snapshot(futures_util::stream::iter(chunks))
        .await
        .map_err(|status| error_chain(&status))?;
    Ok((index, len))
}

/// A shared snapshot's image, as the buffer chunks are cut from.
struct Image(Arc<crate::types::Snapshot>);

impl AsRef<[u8]> for Image {
    fn as_ref(&self) -> &[u8] {
        &self.0.data
    }
}

/// The chunks of one image, in order; the last one carries the checksum.
/// Chunks share the image's buffer (no copy).
fn chunks(
    header: &Header,
    meta: &SnapshotMeta,
    data: Bytes,
) -> Result<Vec<SnapshotChunk>, ConvertError> {
    let total_len = data.len();
    let crc32c = crc32c::crc32c(&data);
    let mut chunks = Vec::with_capacity(total_len / CHUNK_BYTES + 1);
    let mut offset = 0;
    loop {
        let end = (offset + CHUNK_BYTES).min(total_len);
        let done = end == total_len;
        let mut chunk = SnapshotChunk {
            offset: offset as u64,
            data: data.slice(offset..end),
            done,
            crc32c: if done { crc32c } else { 0 },
            ..SnapshotChunk::default()
        };
        if offset == 0 {
            chunk.from = header.from.clone();
            chunk.to = header.to.clone();
            chunk.cluster_id = header.cluster_id.to_string();
            chunk.term = header.term;
            chunk.last_index = meta.last_index;
            chunk.last_term = meta.last_term;
            chunk.config = convert::config_to_wire(&meta.config)?;
            chunk.total_len = total_len as u64;
        }
        chunks.push(chunk);
        if done {
            return Ok(chunks);
        }
        offset = end;
    }
}

/// Why a received image was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    #[error("the stream ended before the image did")]
    Truncated,
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
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("stream failed: {0}")]
    Stream(#[from] Status),
}

/// Reads one image from `stream` and returns it as the `InstallSnapshot`
/// its sender's core asked for. Every check fails the whole image.
pub(super) async fn receive(
    stream: &mut tonic::Streaming<SnapshotChunk>,
    me: &str,
) -> Result<Envelope, ReceiveError> {
    let mut chunk = stream.message().await?.ok_or(ReceiveError::Truncated)?;
    if chunk.to != me {
        return Err(ReceiveError::NotMine {
            to: chunk.to,
            me: me.to_string(),
        });
    }
    let total = chunk.total_len;
    let mut data: Vec<u8> = Vec::new();
    usize::try_from(total)
        .ok()
        .and_then(|len| data.try_reserve_exact(len).ok())
        .ok_or(ReceiveError::TooLarge(total))?;
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
    let mut crc = 0u32;
    loop {
        let at = data.len() as u64;
        if chunk.offset != at {
            return Err(ReceiveError::OutOfOrder {
                got: chunk.offset,
                expected: at,
            });
        }
        if at + chunk.data.len() as u64 > total {
            return Err(ReceiveError::Overrun { at, total });
        }
        crc = crc32c::crc32c_append(crc, &chunk.data);
        data.extend_from_slice(&chunk.data);
        if chunk.done {
            break;
        }
        chunk = stream.message().await?.ok_or(ReceiveError::Truncated)?;
    }
    if data.len() as u64 != total {
        return Err(ReceiveError::Truncated);
    }
    if crc != chunk.crc32c {
        return Err(ReceiveError::Checksum {
            got: crc,
            want: chunk.crc32c,
        });
    }
    Ok(Envelope {
        cluster_id,
        msg: Message {
            from,
            to,
            body: MessageBody::InstallSnapshot { term, meta, data },
        },
    })
}
