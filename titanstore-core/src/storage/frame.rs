//! Record framing shared by WAL segments and snapshot files.
//!
//! A frame is `u32 len | u32 crc32c(len bytes) | u32 crc32c(payload) | payload`
//! (little endian). The separate checksum over the length means a flipped bit
//! in a length is detected instead of sending the reader to a wrong offset.
//! This module only frames bytes; it knows nothing about what the payload is.

use serde::Serialize;

use super::error::StorageError;
use crate::types;

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 12;

/// Appends one frame holding `value`, encoded with the fixed codec config
/// ([`types::codec_config`]), to `out`. Encodes in place: no payload copy.
pub(crate) fn encode_framed<T: Serialize>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), StorageError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = bincode::serde::encode_into_std_write(value, out, types::codec_config()) {
        out.truncate(start);
        return Err(e.into());
    }
    finish_frame(out, start)
}

/// Appends one frame holding raw `payload` bytes to `out`.
#[cfg(test)]
pub(crate) fn encode_frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), StorageError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    out.extend_from_slice(payload);
    finish_frame(out, start)
}

/// Fills in the header of the frame at `start`, whose payload runs to the end of `out`.
fn finish_frame(out: &mut Vec<u8>, start: usize) -> Result<(), StorageError> {
    let payload = &out[start + HEADER_LEN..];
    let header = match frame_header(payload.len(), crc32c::crc32c(payload)) {
        Ok(header) => header,
        Err(err) => {
            out.truncate(start);
            return Err(err);
        }
    };
    out[start..start + HEADER_LEN].copy_from_slice(&header);
    Ok(())
}

/// The header of a frame whose payload is `payload_len` bytes with CRC-32C
/// `payload_crc`.
fn frame_header(payload_len: usize, payload_crc: u32) -> Result<[u8; HEADER_LEN], StorageError> {
    let Ok(len) = u32::try_from(payload_len) else {
        return Err(StorageError::RecordTooLarge(payload_len));
    };
    let len_bytes = len.to_le_bytes();
    let mut header = [0; HEADER_LEN];
    header[..4].copy_from_slice(&len_bytes);
    header[4..8].copy_from_slice(&crc32c::crc32c(&len_bytes).to_le_bytes());
    header[8..].copy_from_slice(&payload_crc.to_le_bytes());
    Ok(header)
}

/// A frame read from a buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame<'a> {
    pub payload: &'a [u8],
    /// Offset just past this frame.
    pub next: usize,
}

/// Why no frame could be read at an offset.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// What an interrupted append leaves behind; acceptable only at the very end
    /// of the last segment.
    Torn(&'static str),
    /// Damage that an interrupted append cannot explain.
    Corrupt(&'static str),
}

/// Reads the frame starting at `off`; `Ok(None)` at a clean end of buffer.
pub(crate) fn read_frame(buf: &[u8], off: usize) -> Result<Option<Frame<'_>>, FrameError> {
    let rest = buf.get(off..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < HEADER_LEN {
        return Err(FrameError::Torn("incomplete record header"));
    }
    let word = |i: usize| u32::from_le_bytes([rest[i], rest[i + 1], rest[i + 2], rest[i + 3]]);
    let (len, len_crc, payload_crc) = (word(0), word(4), word(8));
    if crc32c::crc32c(&rest[0..4]) != len_crc {
        if rest.iter().all(|&b| b == 0) {
            return Err(FrameError::Torn("all-zero tail"));
        }
        return Err(FrameError::Corrupt("length checksum mismatch"));
    }
    let end = HEADER_LEN + len as usize;
    if end > rest.len() {
        return Err(FrameError::Torn("record extends past end of file"));
    }
    let payload = &rest[HEADER_LEN..end];
    if crc32c::crc32c(payload) != payload_crc {
        if end == rest.len() {
            return Err(FrameError::Torn("checksum mismatch in the last record"));
        }
        return Err(FrameError::Corrupt("payload checksum mismatch"));
    }
    Ok(Some(Frame {
        payload,
        next: off + end,
    }))
}

/// Like [`read_frame`], for a buffer whose bytes from `data_end` on are all
/// zeros, as in a preallocated file: the zeros are the clean end, and a
/// frame that fails its checks is torn or corrupt by the same rules as if
/// the buffer ended at `data_end` (what an interrupted write into zeros
/// leaves is what an interrupted append leaves). A frame whose checks pass is
/// read even if its last bytes happen to be zeros.
pub(crate) fn read_frame_before_zeros(
    buf: &[u8],
    off: usize,
    data_end: usize,
) -> Result<Option<Frame<'_>>, FrameError> {
    match read_frame(buf, off) {
        Ok(frame) => Ok(frame),
        Err(_) => read_frame(&buf[..data_end.clamp(off.min(buf.len()), buf.len())], off),
    }
}

/// Where the all-zero suffix of `buf` begins.
pub(crate) fn zero_tail_start(buf: &[u8]) -> usize {
    buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn round_trip_and_tails() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf).unwrap();
        encode_frame(b"", &mut buf).unwrap();
        let f = read_frame(&buf, 0).unwrap().unwrap();
        assert_eq!(f.payload, b"hello");
        let g = read_frame(&buf, f.next).unwrap().unwrap();
        assert_eq!(g.payload, b"");
        assert_eq!(read_frame(&buf, g.next), Ok(None));
        // Every proper prefix of the last frame is torn, never corrupt.
        for cut in f.next + 1..buf.len() {
            assert!(matches!(
                read_frame(&buf[..cut], f.next),
                Err(FrameError::Torn(_))
            ));
        }
        let mut zeros = buf.clone();
        zeros.extend_from_slice(&[0; 40]);
        assert_eq!(
            read_frame(&zeros, buf.len()),
            Err(FrameError::Torn("all-zero tail"))
        );
    }

    #[test]
    fn before_a_zero_tail_the_tail_is_the_end() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf).unwrap();
        let first = buf.len();
        // A frame whose last bytes are zeros is still a frame.
        encode_frame(&[7, 0, 0], &mut buf).unwrap();
        let valid = buf.len();
        buf.extend_from_slice(&[0; 64]);
        let end = zero_tail_start(&buf);
        assert!(end < valid);
        let f = read_frame_before_zeros(&buf, first, end).unwrap().unwrap();
        assert_eq!((f.payload, f.next), (&[7, 0, 0][..], valid));
        assert_eq!(read_frame_before_zeros(&buf, valid, end), Ok(None));
        // Every prefix of the last frame written into the zeros is torn.
        let mut frame = Vec::new();
        encode_frame(b"world!", &mut frame).unwrap();
        for cut in 1..frame.len() {
            let mut torn = buf.clone();
            torn[valid..valid + cut].copy_from_slice(&frame[..cut]);
            let end = zero_tail_start(&torn);
            assert!(
                matches!(
                    read_frame_before_zeros(&torn, valid, end),
                    Err(FrameError::Torn(_))
                ),
                "cut {cut}"
            );
        }
        // Damage with data after it is corruption, zeros or not.
        let mut bad = buf.clone();
        bad[first + 12] ^= 1;
        let end = zero_tail_start(&bad);
        bad[0] ^= 1;
        assert!(matches!(
            read_frame_before_zeros(&bad, 0, end),
            Err(FrameError::Corrupt(_))
        ));
    }

    #[test]
    fn flipped_length_bit_is_corrupt() {
        let mut buf = Vec::new();
        encode_frame(b"hello", &mut buf).unwrap();
        encode_frame(b"world", &mut buf).unwrap();
        buf[1] ^= 0x01;
        assert_eq!(
            read_frame(&buf, 0),
            Err(FrameError::Corrupt("length checksum mismatch"))
        );
    }
}
