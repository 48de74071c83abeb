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
//! The receiver writes the image to a file in its data directory as it
//! arrives ([`spool`]), not to memory, so a send that breaks off (a cut
//! connection, a restarted sender, a restarted receiver) leaves what arrived
//! on disk. Before each send the sender asks (`SnapshotHeld`) how much of the
//! same image, named by its index, term, length and checksum, the receiver
//! holds, and starts there. What a receiver holds is deleted when another
//! image begins, when the image is refused, once its node has applied past
//! the image, and after [`PARTIAL_TTL`] without progress.
//!
//! A peer gets one image at a time: requests while one is on its way are
//! dropped, and so are repeats of an image just delivered, for a while (the
//! follower is still decoding and saving it; the core asks again on a timer).
//!
//! Files: `send.rs` (the sending side), `receive.rs` (checking a stream of
//! chunks), `spool.rs` (the receiver's file).

mod receive;
mod send;
mod spool;

use std::time::Duration;

pub use receive::ReceiveError;
pub(super) use receive::receive;
pub(super) use send::{SnapshotSends, start_send};
pub(super) use spool::Spool;

use crate::types::{LogIndex, Term};

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

/// What names one image: a resumed send must name the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ImageId {
    last_index: LogIndex,
    last_term: Term,
    total_len: u64,
    crc32c: u32,
}

impl ImageId {
    fn of_offer(offer: &titanstore_proto::SnapshotOffer) -> ImageId {
        ImageId {
            last_index: offer.last_index,
            last_term: offer.last_term,
            total_len: offer.total_len,
            crc32c: offer.crc32c,
        }
    }
}
