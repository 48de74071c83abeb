//! Sending snapshot images: one send at a time per peer, each asking first
//! how much of the image the peer holds and streaming the rest from the
//! snapshot file, chunk by chunk, as HTTP/2 flow control asks for it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use titanstore_proto::raft_client::RaftClient;
use titanstore_proto::{SnapshotChunk, SnapshotOffer};
use tonic::transport::Channel;

use super::super::convert::{self, ConvertError};
use super::super::error_chain;
use super::super::peer::SnapshotSource;
use super::{CHUNK_BYTES, REPEAT_PAUSE};
use crate::raft::{Message, MessageBody};
use crate::storage::SnapshotFile;
use crate::types::{LogIndex, NodeId, Term};

/// What a peer's sender knows about images it sends to that peer.
#[derive(Default)]
pub(in crate::transport) struct SnapshotSends {
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
    pub(in crate::transport) fn reconnected(&self) {
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
pub(in crate::transport) fn start_send(
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
            Ok(sent) => {
                let took = started.elapsed();
                tracing::info!(peer = %peer, index = sent.index, bytes = sent.len,
                    resumed_at = sent.from, sent = sent.len - sent.from,
                    millis = took.as_millis() as u64,
                    "snapshot image delivered");
                Some((sent.index, took))
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

/// An image delivered: its index, length, and where this send started.
struct Sent {
    index: LogIndex,
    len: u64,
    from: u64,
}

/// Opens the newest image (at least `index`), asks the peer how much of it
/// it holds, and streams the rest from the file.
async fn send(
    mut client: RaftClient<Channel>,
    header: Header,
    index: LogIndex,
    snapshots: Arc<dyn SnapshotSource>,
) -> Result<Sent, String> {
    let image = tokio::task::spawn_blocking(move || match snapshots.open()? {
        Some(image) if image.meta.last_index >= index => Ok(image),
        _ => Err(format!("no snapshot at or after index {index} on disk")),
    })
    .await
    .map_err(|err| format!("snapshot loader failed: {err}"))??;
    let offer = SnapshotOffer {
        from: header.from.clone(),
        to: header.to.clone(),
        last_index: image.meta.last_index,
        last_term: image.meta.last_term,
        total_len: image.image_len,
        crc32c: image.crc32c,
    };
    // A peer that cannot say (an error, a nonsense offset) gets it all.
    let from = match client.snapshot_held(offer).await {
        Ok(reply) => reply.into_inner().offset,
        Err(status) => {
            tracing::debug!(peer = %header.to, why = %error_chain(&status),
                "peer did not say what it holds of the image");
            0
        }
    };
    let from = if from <= image.image_len { from } else { 0 };
    let first = first_chunk(&header, &image, from).map_err(|err| err.to_string())?;
    let (index, len) = (image.meta.last_index, image.image_len);
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let chunks = chunks(first, Arc::clone(&image), Arc::clone(&failed));
    let sent = client.snapshot(chunks).await;
    if let Some(why) = failed.lock().ok().and_then(|mut why| why.take()) {
        return Err(why);
    }
    if let Err(status) = sent {
        if status.code() == tonic::Code::DataLoss {
            // The file is read unchecked as it goes out: check it whole now.
            let checked = tokio::task::spawn_blocking(move || image.verify()).await;
            if let Ok(Err(err)) = checked {
                tracing::error!(%err, "the snapshot file being sent is damaged; \
                    it is replaced by the next snapshot this node takes");
            }
        }
        return Err(error_chain(&status));
    }
    Ok(Sent { index, len, from })
}

/// The header chunk of a send starting at `offset`, without its data.
fn first_chunk(
    header: &Header,
    image: &SnapshotFile,
    offset: u64,
) -> Result<SnapshotChunk, ConvertError> {
    Ok(SnapshotChunk {
        from: header.from.clone(),
        to: header.to.clone(),
        cluster_id: header.cluster_id.to_string(),
        term: header.term,
        last_index: image.meta.last_index,
        last_term: image.meta.last_term,
        config: convert::config_to_wire(&image.meta.config)?,
        total_len: image.image_len,
        offset,
        crc32c: image.crc32c,
        head: image.head.clone().into(),
        ..SnapshotChunk::default()
    })
}

/// The chunks of `image` from `first.offset` to its end, each read from the
/// file off the async threads when HTTP/2 wants it. A read error ends the
/// stream early (the receiver keeps what came) and is left in `failed`.
fn chunks(
    first: SnapshotChunk,
    image: Arc<SnapshotFile>,
    failed: Arc<Mutex<Option<String>>>,
) -> impl futures_util::Stream<Item = SnapshotChunk> + Send + 'static {
    futures_util::stream::unfold(Some(first), move |next| {
        let image = Arc::clone(&image);
        let failed = Arc::clone(&failed);
        async move {
            let mut chunk = next?;
            let at = chunk.offset;
            let len = (image.image_len - at).min(CHUNK_BYTES as u64) as usize;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len];
                image.read_image_at(at, &mut buf).map(|()| buf)
            })
            .await;
            let data = match read {
                Ok(Ok(data)) => data,
                Ok(Err(err)) => {
                    if let Ok(mut why) = failed.lock() {
                        *why = Some(format!("reading the snapshot file at {at}: {err}"));
                    }
                    return None;
                }
                Err(err) => {
                    if let Ok(mut why) = failed.lock() {
                        *why = Some(format!("snapshot reader failed: {err}"));
                    }
                    return None;
                }
            };
            let end = at + data.len() as u64;
            chunk.data = Bytes::from(data);
            chunk.done = end == chunk.total_len;
            let following = (!chunk.done).then(|| SnapshotChunk {
                offset: end,
                total_len: chunk.total_len,
                ..SnapshotChunk::default()
            });
            Some((chunk, following))
        }
    })
}
