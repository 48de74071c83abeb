//! Snapshot images between nodes: chunked, checksummed, one at a time,
//! resumed where a broken send stopped.
//!
//! The core asks for an `InstallSnapshot` with an empty image; the peer task
//! hands it here. The sender opens its snapshot file and reads only its
//! header; the image is read from the file as it is streamed on its own gRPC
//! call (`Snapshot`) in [`CHUNK_BYTES`] pieces, so the sender never holds an
//! image in memory, messages to the same peer never queue behind it, and
//! HTTP/2 flow control paces it: an image of any size travels, with no
//! message cap. The checksum, over the file's head (the encoded metadata,
//! which the receiver decodes and matches against the header) and the whole
//! image, is the one the file already records, so it is known before the
//! image is read; the receiver checks order, length, head and checksum
//! before its node sees the image. A receiver that finds the checksum wrong
//! says so (`DATA_LOSS`), and the sender then checks its own file whole.
//!
//! A send that breaks off (a cut connection, a restarted sender) leaves the
//! receiver holding what arrived. Before each send the sender asks
//! (`SnapshotHeld`) how much of the same image, named by its index, term,
//! length and checksum, the receiver holds, and starts there. What a
//! receiver holds is dropped when another image begins, when the image is
//! refused, once its node has applied past the image, and after
//! [`PARTIAL_TTL`] without progress.
//!
//! A peer gets one image at a time: requests while one is on its way are
//! dropped, and so are repeats of an image just delivered, for a while (the
//! follower is still decoding and saving it; the core asks again on a timer).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use titanstore_proto::raft_client::RaftClient;
use titanstore_proto::{SnapshotChunk, SnapshotOffer};
use tonic::Status;
use tonic::transport::Channel;

use super::convert::{self, ConvertError};
use super::peer::SnapshotSource;
use super::{Envelope, error_chain};
use crate::raft::{Message, MessageBody};
use crate::storage::SnapshotFile;
use crate::types::{LogIndex, NodeId, SnapshotMeta, Term};

/// Bytes of image per chunk.
pub const CHUNK_BYTES: usize = 1 << 20;
/// How long, at least, a delivered image is not sent again.
const REPEAT_PAUSE: Duration = Duration::from_secs(10);
/// How long a receiver keeps part of an image that no send goes on with
/// (checked each second).
pub const PARTIAL_TTL: Duration = Duration::from_secs(60);
/// A send whose next chunk takes longer than this is taken as broken off
/// (a sender that vanished without closing its connection).
pub const CHUNK_TIMEOUT: Duration = Duration::from_secs(20);

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
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("stream failed: {0}")]
    Stream(#[from] Status),
}

/// What names one image: a resumed send must name the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ImageId {
    last_index: LogIndex,
    last_term: Term,
    total_len: u64,
    crc32c: u32,
}

/// An image received in part.
struct Partial {
    id: ImageId,
    data: Vec<u8>,
    /// CRC-32C of the head and `data`.
    crc: u32,
    touched: Instant,
}

/// What a receiver holds of an image whose send broke off (one at most).
#[derive(Default)]
pub(super) struct Held {
    partial: Mutex<Option<Partial>>,
}

impl Held {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Partial>> {
        // A panic while holding it left at worst a stale part: drop it.
        let mut slot = self.partial.lock().unwrap_or_else(|poisoned| {
            let mut slot = poisoned.into_inner();
            *slot = None;
            slot
        });
        if slot
            .as_ref()
            .is_some_and(|p| p.touched.elapsed() > PARTIAL_TTL)
        {
            tracing::info!("dropping part of a snapshot image no send went on with");
            *slot = None;
        }
        slot
    }

    /// Bytes held of `offer`'s image; anything held of another is dropped.
    pub(super) fn offered(&self, offer: &SnapshotOffer) -> u64 {
        let id = ImageId {
            last_index: offer.last_index,
            last_term: offer.last_term,
            total_len: offer.total_len,
            crc32c: offer.crc32c,
        };
        let mut slot = self.slot();
        match slot.as_ref() {
            Some(partial) if partial.id == id => partial.data.len() as u64,
            _ => {
                *slot = None;
                0
            }
        }
    }

    /// Drops a part held longer than [`PARTIAL_TTL`] without progress, or of
    /// an image at or below `applied`, the node's applied index.
    pub(super) fn expire(&self, applied: LogIndex) {
        let mut slot = self.slot();
        if slot.as_ref().is_some_and(|p| p.id.last_index <= applied) {
            tracing::info!(
                applied,
                "dropping part of a snapshot image the node caught up without"
            );
            *slot = None;
        }
    }

    fn take(&self) -> Option<Partial> {
        self.slot().take()
    }

    fn keep(&self, mut partial: Partial) {
        partial.touched = Instant::now();
        *self.slot() = Some(partial);
    }
}

/// Reads one image from `stream`, from the start or from where `held` says an
/// earlier send of it stopped, and returns it as the `InstallSnapshot` its
/// sender's core asked for. Every check fails the whole image; a stream that
/// only stops early leaves what arrived in `held` for the next send.
pub(super) async fn receive(
    stream: &mut tonic::Streaming<SnapshotChunk>,
    me: &str,
    held: &Held,
    counters: Option<&super::ImageCounters>,
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
    let earlier = held.take();
    let mut partial = if chunk.offset == 0 {
        // What was held of an earlier image is freed before this one is reserved.
        drop(earlier);
        let mut data: Vec<u8> = Vec::new();
        usize::try_from(id.total_len)
            .ok()
            .and_then(|len| data.try_reserve_exact(len).ok())
            .ok_or(ReceiveError::TooLarge(id.total_len))?;
        tracing::info!(from = %from, index = id.last_index, total = id.total_len,
            "receiving a snapshot image");
        match crate::storage::decode_snapshot_head(&chunk.head) {
            Some((head_meta, len)) if head_meta == meta && len == id.total_len => {}
            _ => return Err(ReceiveError::HeadMismatch),
        }
        Partial {
            id,
            data,
            crc: crc32c::crc32c(&chunk.head),
            touched: Instant::now(),
        }
    } else {
        match earlier {
            Some(partial) if partial.id == id && partial.data.len() as u64 == chunk.offset => {
                tracing::info!(from = %from, index = id.last_index, offset = chunk.offset,
                    total = id.total_len, "resuming a snapshot image where its last send stopped");
                if let Some(counters) = counters {
                    counters.resumes.inc();
                }
                partial
            }
            other => {
                // A part of this very image stays for a send that gets it right.
                if let Some(partial) = other.filter(|p| p.id == id) {
                    held.keep(partial);
                }
                return Err(ReceiveError::NothingToResume(chunk.offset));
            }
        }
    };
    match fill(&mut partial, chunk, stream, counters).await {
        Ok(()) => {}
        Err(err @ (ReceiveError::Truncated | ReceiveError::Stream(_))) => {
            if !partial.data.is_empty() {
                tracing::info!(
                    index = partial.id.last_index,
                    bytes = partial.data.len(),
                    total = partial.id.total_len,
                    "a snapshot image's send broke off: keeping what arrived for the next send"
                );
                held.keep(partial);
            }
            return Err(err);
        }
        Err(err) => return Err(err),
    }
    Ok(Envelope {
        cluster_id,
        msg: Message {
            from,
            to,
            body: MessageBody::InstallSnapshot {
                term,
                meta,
                data: partial.data,
            },
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

/// Appends `chunk` and the chunks after it to `partial` until the last one,
/// then checks the whole image.
async fn fill(
    partial: &mut Partial,
    mut chunk: SnapshotChunk,
    stream: &mut tonic::Streaming<SnapshotChunk>,
    counters: Option<&super::ImageCounters>,
) -> Result<(), ReceiveError> {
    let total = partial.id.total_len;
    loop {
        let at = partial.data.len() as u64;
        if chunk.offset != at {
            return Err(ReceiveError::OutOfOrder {
                got: chunk.offset,
                expected: at,
            });
        }
        if at + chunk.data.len() as u64 > total {
            return Err(ReceiveError::Overrun { at, total });
        }
        partial.crc = crc32c::crc32c_append(partial.crc, &chunk.data);
        partial.data.extend_from_slice(&chunk.data);
        if let Some(counters) = counters {
            counters.received_bytes.inc_by(chunk.data.len() as u64);
        }
        if chunk.done {
            break;
        }
        chunk = next_chunk(stream).await?;
    }
    if partial.data.len() as u64 != total {
        return Err(ReceiveError::ShortImage {
            at: partial.data.len() as u64,
            total,
        });
    }
    if partial.crc != partial.id.crc32c {
        return Err(ReceiveError::Checksum {
            got: partial.crc,
            want: partial.id.crc32c,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(last_index: LogIndex) -> SnapshotOffer {
        SnapshotOffer {
            last_index,
            last_term: 2,
            total_len: 100,
            crc32c: 7,
            ..SnapshotOffer::default()
        }
    }

    fn part(last_index: LogIndex, bytes: usize) -> Partial {
        Partial {
            id: ImageId {
                last_index,
                last_term: 2,
                total_len: 100,
                crc32c: 7,
            },
            data: vec![1; bytes],
            crc: 0,
            touched: Instant::now(),
        }
    }

    /// A held part answers an offer of its own image only; it goes when
    /// another image is offered, or once the node applied past its index.
    #[test]
    fn a_held_part_lives_until_another_image_or_the_node_passes_it() {
        let held = Held::default();
        assert_eq!(held.offered(&offer(50)), 0);
        held.keep(part(50, 30));
        assert_eq!(held.offered(&offer(50)), 30);
        held.expire(49);
        assert_eq!(
            held.offered(&offer(50)),
            30,
            "dropped before the node passed it"
        );
        held.expire(50);
        assert_eq!(
            held.offered(&offer(50)),
            0,
            "kept after the node applied it"
        );
        held.keep(part(50, 30));
        assert_eq!(held.offered(&offer(60)), 0);
        assert_eq!(
            held.offered(&offer(50)),
            0,
            "kept after another image was offered"
        );
    }
}
