//! Snapshot images written a slice at a time, while writes go on.
//!
//! Encoding a map of a million keys takes longer than an election timeout,
//! so the event loop cannot do it in one go. An [`ImageWriter`] captures the
//! image's point (applied index, term, configuration, cluster id, sessions:
//! all small) when it starts, then writes the keys in order, a bounded
//! slice per call, while the map keeps changing. It stays exact by keeping,
//! for every key not written yet that a write changes, the key's value at
//! the image's point (or that it was absent then): the first change saves
//! it, later ones find it saved. What it keeps is bounded by the keys
//! written to during the encoding.
//!
//! The bytes are exactly those of a one-shot encoding (the serde form of
//! [`super::Image`]): the map is a bincode sequence, so its length comes
//! first (the map's length at the image's point), then each
//! `(key, mod_rev, value)` tuple. The checksum is kept running.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::IMAGE_MAGIC;
use super::kv_map::{Item, KvMap};
use super::sessions::SessionsImage;
use crate::types::{self, ClusterConfig, LogIndex, Term};

/// Why an image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot encode the image: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("image lost count of its keys: {0} still expected at the end")]
    Count(i128),
}

/// An image being written (see the module docs).
#[derive(Clone, Debug)]
pub struct ImageWriter {
    index: LogIndex,
    term: Term,
    out: Vec<u8>,
    /// crc32c of `out[8..crc_upto]`.
    crc: u32,
    crc_upto: usize,
    /// The last key looked at; keys after it are still to come.
    cursor: Option<Box<[u8]>>,
    /// Keys the sequence still owes (its length was written first).
    remaining: i128,
    /// Values at the image's point of keys after `cursor` changed since.
    saved: BTreeMap<Box<[u8]>, Option<Item>>,
    /// The encoded sessions, which close the image.
    tail: Vec<u8>,
}

/// One (key, rev, value) in the image's byte form.
fn encode_item(out: &mut Vec<u8>, item: &Item) -> Result<(), ImageError> {
    let (key, mod_rev, value) = item.parts();
    bincode::serde::encode_into_std_write(
        (
            serde_bytes::Bytes::new(key),
            mod_rev,
            serde_bytes::Bytes::new(value),
        ),
        out,
        types::codec_config(),
    )?;
    Ok(())
}

impl ImageWriter {
    /// Starts an image of the state at `index`; `capacity` sizes the buffer
    /// (e.g. the previous image's length).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn begin(
        index: LogIndex,
        term: Term,
        config: &ClusterConfig,
        cluster_id: &Option<String>,
        map_len: usize,
        sessions: SessionsImage,
        capacity: usize,
    ) -> Result<ImageWriter, ImageError> {
        let cfg = types::codec_config();
        let tail = types::encode(&sessions)?;
        let mut out = Vec::with_capacity(capacity.max(64) + tail.len());
        out.extend_from_slice(&IMAGE_MAGIC);
        out.extend_from_slice(&[0; 4]);
        bincode::serde::encode_into_std_write(index, &mut out, cfg)?;
        bincode::serde::encode_into_std_write(term, &mut out, cfg)?;
        bincode::serde::encode_into_std_write(config, &mut out, cfg)?;
        bincode::serde::encode_into_std_write(cluster_id, &mut out, cfg)?;
        // A sequence's length is a u64 in the codec, as this is.
        bincode::serde::encode_into_std_write(map_len as u64, &mut out, cfg)?;
        Ok(ImageWriter {
            index,
            term,
            out,
            crc: 0,
            crc_upto: 8,
            cursor: None,
            remaining: map_len as i128,
            saved: BTreeMap::new(),
            tail,
        })
    }

    /// The applied index and term the image is of.
    pub fn point(&self) -> (LogIndex, Term) {
        (self.index, self.term)
    }

    /// Called before a write changes `key`, with its current value.
    pub(super) fn before_change(&mut self, key: &[u8], current: Option<&Item>) {
        let ahead = self.cursor.as_deref().is_none_or(|c| key > c);
        if ahead && !self.saved.contains_key(key) {
            self.saved.insert(key.into(), current.cloned());
        }
    }

    /// Writes up to `max_keys` more keys (or about `max_bytes`); `Ok(true)`
    /// once every key is written.
    pub(super) fn step(
        &mut self,
        map: &KvMap,
        max_keys: usize,
        max_bytes: usize,
    ) -> Result<bool, ImageError> {
        let lower = match self.cursor.as_deref() {
            Some(c) => Bound::Excluded(c),
            None => Bound::Unbounded,
        };
        let mut live = map.range((lower, Bound::Unbounded)).peekable();
        let mut saved = self
            .saved
            .range::<[u8], _>((lower, Bound::Unbounded))
            .peekable();
        let start_len = self.out.len();
        let mut last: Option<&[u8]> = None;
        let mut done = false;
        let mut keys = 0;
        while keys < max_keys.max(1) && self.out.len() - start_len < max_bytes.max(1) {
            // The next key in order, and its value at the image's point: a
            // saved value wins over the live one (the live one is newer).
            let next_live = live.peek().map(|item| item.key());
            let next_saved = saved.peek().map(|(k, _)| &***k);
            let (key, at_point) = match (next_live, next_saved) {
                (None, None) => {
                    done = true;
                    break;
                }
                (Some(l), Some(s)) if s <= l => {
                    if s == l {
                        live.next();
                    }
                    match saved.next() {
                        Some((k, v)) => (&**k, v.as_ref()),
                        None => break,
                    }
                }
                (Some(_), _) => match live.next() {
                    Some(item) => (item.key(), Some(item)),
                    None => break,
                },
                (None, Some(_)) => match saved.next() {
                    Some((k, v)) => (&**k, v.as_ref()),
                    None => break,
                },
            };
            if let Some(item) = at_point {
                encode_item(&mut self.out, item)?;
                self.remaining -= 1;
            }
            last = Some(key);
            keys += 1;
        }
        if !done && live.peek().is_none() && saved.peek().is_none() {
            done = true;
        }
        if let Some(last) = last {
            let last: Box<[u8]> = last.into();
            // Saved values at or before the cursor are written: drop them.
            let mut rest = self.saved.split_off(&last);
            rest.remove(&last);
            self.saved = rest;
            self.cursor = Some(last);
        }
        self.crc = crc32c::crc32c_append(self.crc, &self.out[self.crc_upto..]);
        self.crc_upto = self.out.len();
        Ok(done)
    }

    /// The finished image (after [`ImageWriter::step`] said done).
    pub(super) fn finish(mut self) -> Result<Vec<u8>, ImageError> {
        if self.remaining != 0 {
            return Err(ImageError::Count(self.remaining));
        }
        self.out.extend_from_slice(&self.tail);
        self.crc = crc32c::crc32c_append(self.crc, &self.out[self.crc_upto..]);
        self.out[4..8].copy_from_slice(&self.crc.to_le_bytes());
        Ok(self.out)
    }
}
