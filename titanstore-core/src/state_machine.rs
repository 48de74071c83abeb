//! The key-value state machine the Raft log is applied to: an ordered map of
//! raw bytes (each key with its `mod_rev`, the index of the entry that last
//! wrote it), the applied index, the latest cluster configuration and the
//! client-session table of exactly-once writes, plus the snapshot image of all.
//!
//! Compare-and-set, compare-and-delete and session checks are decided here,
//! at apply time, from the entry and the state alone, so every node reaches
//! the same result; [`StateMachine::apply_entry`] returns it for the replica
//! to turn into the client's reply, and the change for watchers.
//!
//! Applying is idempotent by index (an entry at or below `applied` is skipped),
//! so replaying a log over a restored snapshot is always safe. This is the one
//! place new commands (compare-and-set, client sessions) get their effect.
//! It does no I/O; the storage layer persists the images it produces.

mod image_writer;
mod kv_map;
mod sessions;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

pub use image_writer::ImageError;
use image_writer::ImageWriter;
use kv_map::{Item, KvMap};
pub use sessions::{Admission, REPLY_WINDOW, SavedReply, Sessions};

use crate::types::{
    self, ClusterConfig, Command, Entry, EntryPayload, LogIndex, SnapshotMeta, Term,
};

/// What applying a command decided (the replica maps it to the reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteResult {
    /// `OK`: a SET or DELETE.
    Ok,
    /// `OK <rev>`: a CAS or CAD that took effect at `rev`.
    Rev(LogIndex),
    /// `ERR CONFLICT <current_rev>` (0: absent).
    Conflict(LogIndex),
    /// `ERR SESSION_EXPIRED`.
    SessionExpired,
    /// A command no client can send (e.g. a session inside a session).
    Invalid(&'static str),
}

impl From<SavedReply> for WriteResult {
    fn from(saved: SavedReply) -> WriteResult {
        match saved {
            SavedReply::Ok => WriteResult::Ok,
            SavedReply::Rev(rev) => WriteResult::Rev(rev),
            SavedReply::Conflict(rev) => WriteResult::Conflict(rev),
        }
    }
}

/// A key changed by an applied entry: its new value, or `None` when deleted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// The outcome of applying one entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// For client commands: what the client is told.
    pub result: Option<WriteResult>,
    /// The key it changed, if any (a failed CAS or a DELETE of a missing key changes none).
    pub change: Option<Change>,
}

/// One entry of a scan: key, `mod_rev`, value.
pub type ScanItem = (Vec<u8>, LogIndex, Vec<u8>);

/// The replicated key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    map: KvMap,
    /// Bytes of every key and value in `map` (sizes image buffers).
    map_bytes: u64,
    applied_index: LogIndex,
    applied_term: Term,
    config: ClusterConfig,
    cluster_id: Option<String>,
    sessions: Sessions,
    /// A snapshot image being written (work in progress, not state).
    writer: InProgress,
}

/// An [`ImageWriter`] at work; never part of equality.
#[derive(Clone, Debug, Default)]
struct InProgress(Option<Box<ImageWriter>>);

impl PartialEq for InProgress {
    fn eq(&self, _: &InProgress) -> bool {
        true
    }
}

impl Eq for InProgress {}

/// Where [`StateMachine::continue_image`] stands.
#[derive(Debug)]
pub enum ImageProgress {
    /// No image is being written (none began, or a restore replaced the state).
    Idle,
    /// More slices to go.
    Pending,
    /// The image of the state at `index` (of `term`).
    Done {
        index: LogIndex,
        term: Term,
        data: Vec<u8>,
    },
}

/// First bytes of a snapshot image: format version 3, checksummed.
/// An image is `IMAGE_MAGIC | crc32c(body) (u32 LE) | body`, the body being
/// an [`Image`] in the fixed codec. Version 2 images (same header, no
/// revisions or sessions) and release 1 images (no header, no cluster id)
/// are still read (see [`OldImage`]).
pub const IMAGE_MAGIC: [u8; 4] = *b"TSS3";
const IMAGE2_MAGIC: [u8; 4] = *b"TSS2";

/// The encoded form of a snapshot's `data` (after the header).
#[derive(Serialize, Deserialize)]
struct Image<C, M, I, S> {
    applied_index: LogIndex,
    applied_term: Term,
    config: C,
    cluster_id: I,
    /// Key, mod_rev, value triples in key order.
    map: M,
    sessions: S,
}

/// An image of an older version, whose values have no revisions: version
/// 2's (with a cluster id, no sessions) when `WITH_ID`, else release 1's
/// (no header, no cluster id). Keys get the image's index as `mod_rev`: no
/// key can have been written later than that. Decoded by hand (the fields
/// in order, as the derived form would) so the map's items are built with
/// that index directly.
struct OldImage<C, const WITH_ID: bool> {
    applied_index: LogIndex,
    applied_term: Term,
    config: C,
    cluster_id: Option<String>,
    map: KvMap,
}

impl<'de, C: Deserialize<'de>, const WITH_ID: bool> Deserialize<'de> for OldImage<C, WITH_ID> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<C, const WITH_ID: bool>(std::marker::PhantomData<C>);
        impl<'de, C: Deserialize<'de>, const WITH_ID: bool> serde::de::Visitor<'de> for Visit<C, WITH_ID> {
            type Value = OldImage<C, WITH_ID>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an image without revisions")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                fn field<T, E: serde::de::Error>(
                    value: Option<T>,
                    at: usize,
                    of: &dyn serde::de::Expected,
                ) -> Result<T, E> {
                    value.ok_or_else(|| E::invalid_length(at, of))
                }
                let applied_index = field(seq.next_element()?, 0, &self)?;
                let applied_term = field(seq.next_element()?, 1, &self)?;
                let config = field(seq.next_element()?, 2, &self)?;
                let cluster_id = match WITH_ID {
                    true => field(seq.next_element()?, 3, &self)?,
                    false => None,
                };
                let map = field(seq.next_element_seed(MapIn(applied_index))?, 4, &self)?;
                Ok(OldImage {
                    applied_index,
                    applied_term,
                    config,
                    cluster_id,
                    map,
                })
            }
        }
        const FIELDS: [&str; 5] = [
            "applied_index",
            "applied_term",
            "config",
            "cluster_id",
            "map",
        ];
        let fields: &'static [&str] = match WITH_ID {
            true => &FIELDS,
            false => &[FIELDS[0], FIELDS[1], FIELDS[2], FIELDS[4]],
        };
        deserializer.deserialize_struct("OldImage", fields, Visit(std::marker::PhantomData))
    }
}

/// A byte string of an image, borrowed from it where the decoder allows
/// (bincode from a slice does), so an item is the one copy of its bytes.
#[derive(Deserialize)]
struct BytesIn<'a>(#[serde(borrow, with = "serde_bytes")] Cow<'a, [u8]>);

/// The decoded map of a version 3 image.
struct RevMapIn(KvMap);

impl<'de> Deserialize<'de> for RevMapIn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RevMapIn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence of (key, rev, value)")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<RevMapIn, A::Error> {
                let mut items = Vec::with_capacity(access.size_hint().unwrap_or(0).min(1 << 20));
                while let Some((k, mod_rev, v)) =
                    access.next_element::<(BytesIn<'de>, LogIndex, BytesIn<'de>)>()?
                {
                    items.push(Item::new(&k.0, mod_rev, &v.0));
                }
                Ok(RevMapIn(items.into_iter().collect()))
            }
        }
        deserializer.deserialize_seq(Visit)
    }
}

/// Decodes an older image's map (of keys to values) with every key at `rev`.
struct MapIn(LogIndex);

impl<'de> serde::de::DeserializeSeed<'de> for MapIn {
    type Value = KvMap;
    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<KvMap, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for MapIn {
    type Value = KvMap;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of byte strings")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<KvMap, A::Error> {
        let mut items = Vec::with_capacity(access.size_hint().unwrap_or(0).min(1 << 20));
        while let Some((k, v)) = access.next_entry::<BytesIn<'de>, BytesIn<'de>>()? {
            items.push(Item::new(&k.0, self.0, &v.0));
        }
        Ok(items.into_iter().collect())
    }
}

/// Error restoring a snapshot image.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("undecodable snapshot image: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("snapshot image checksum mismatch (damaged in transit or on disk)")]
    Checksum,
    #[error("snapshot image is at index {image} but its metadata says {meta}")]
    IndexMismatch { image: LogIndex, meta: LogIndex },
}

/// The body after an image's magic, once its checksum matches.
fn checked_body(rest: &[u8]) -> Result<&[u8], RestoreError> {
    let (crc, body) = rest.split_at_checked(4).ok_or(RestoreError::Checksum)?;
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Err(RestoreError::Checksum);
    }
    Ok(body)
}

impl StateMachine {
    /// An empty map with nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `entry` unless it was applied already. Returns whether it took effect.
    pub fn apply(&mut self, entry: &Entry) -> bool {
        self.apply_entry(entry).is_some()
    }

    /// Applies `entry` unless it was applied already (`None`), and returns
    /// what it decided and changed.
    pub fn apply_entry(&mut self, entry: &Entry) -> Option<Applied> {
        if entry.index <= self.applied_index {
            return None;
        }
        let mut applied = Applied::default();
        match &*entry.payload {
            EntryPayload::Noop => {}
            EntryPayload::Config(config) => self.config = config.clone(),
            EntryPayload::Bootstrap { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
            }
            EntryPayload::Command(Command::Session {
                client,
                seq,
                now_ms,
                ttl_ms,
                command,
            }) => {
                let result = match self.sessions.admit(client, *seq, *now_ms, *ttl_ms) {
                    Admission::Duplicate(saved) => saved.into(),
                    Admission::Expired => WriteResult::SessionExpired,
                    Admission::Fresh => {
                        let result = self.run(entry.index, command, &mut applied.change);
                        let saved = match result {
                            WriteResult::Ok => Some(SavedReply::Ok),
                            WriteResult::Rev(rev) => Some(SavedReply::Rev(rev)),
                            WriteResult::Conflict(rev) => Some(SavedReply::Conflict(rev)),
                            WriteResult::SessionExpired | WriteResult::Invalid(_) => None,
                        };
                        if let Some(saved) = saved {
                            self.sessions.record(client, *seq, saved);
                        }
                        result
                    }
                };
                applied.result = Some(result);
            }
            EntryPayload::Command(command) => {
                applied.result = Some(self.run(entry.index, command, &mut applied.change));
            }
        }
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        Some(applied)
    }

    /// Runs one plain command at revision `rev`.
    fn run(
        &mut self,
        rev: LogIndex,
        command: &Command,
        change: &mut Option<Change>,
    ) -> WriteResult {
        match command {
            Command::Set { key, value } => {
                self.put(rev, key, value, change);
                WriteResult::Ok
            }
            Command::Delete { key } => {
                self.remove(key, change);
                WriteResult::Ok
            }
            Command::Cas {
                key,
                expected,
                value,
            } => {
                let current = self.mod_rev(key);
                if current != *expected {
                    return WriteResult::Conflict(current);
                }
                self.put(rev, key, value, change);
                WriteResult::Rev(rev)
            }
            Command::Cad { key, expected } => {
                let current = self.mod_rev(key);
                if current == 0 || current != *expected {
                    return WriteResult::Conflict(current);
                }
                self.remove(key, change);
                WriteResult::Rev(rev)
            }
            Command::Session { .. } => WriteResult::Invalid("a session cannot nest"),
        }
    }

    fn put(&mut self, rev: LogIndex, key: &[u8], value: &[u8], change: &mut Option<Change>) {
        if let Some(writer) = self.writer.0.as_mut() {
            writer.before_change(key, self.map.get(key));
        }
        let old = self.map.insert(Item::new(key, rev, value));
        self.map_bytes += (key.len() + value.len()) as u64;
        if let Some(old) = old {
            self.map_bytes -= (key.len() + old.value().len()) as u64;
        }
        *change = Some(Change {
            key: key.to_vec(),
            value: Some(value.to_vec()),
        });
    }

    fn remove(&mut self, key: &[u8], change: &mut Option<Change>) {
        if let Some(writer) = self.writer.0.as_mut() {
            writer.before_change(key, self.map.get(key));
        }
        if let Some(old) = self.map.remove(key) {
            self.map_bytes -= (key.len() + old.value().len()) as u64;
            *change = Some(Change {
                key: key.to_vec(),
                value: None,
            });
        }
    }

    /// The revision that last wrote `key` (0 when absent).
    pub fn mod_rev(&self, key: &[u8]) -> LogIndex {
        self.map.get(key).map_or(0, Item::mod_rev)
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(Item::value)
    }

    /// The value of `key` and the revision that wrote it.
    pub fn get_rev(&self, key: &[u8]) -> Option<(LogIndex, &[u8])> {
        self.map.get(key).map(|item| {
            let (_, mod_rev, value) = item.parts();
            (mod_rev, value)
        })
    }

    /// At most `limit` keys that start with `prefix`, strictly after `after`
    /// when given, in byte order; and whether more such keys remain.
    pub fn scan(&self, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> (Vec<ScanItem>, bool) {
        use std::ops::Bound;
        let start: Bound<&[u8]> = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut items = Vec::new();
        let mut more = false;
        for (key, mod_rev, value) in self
            .map
            .range((start, Bound::Unbounded))
            .map(Item::parts)
            .take_while(|(key, _, _)| key.starts_with(prefix))
        {
            if items.len() == limit {
                more = true;
                break;
            }
            items.push((key.to_vec(), mod_rev, value.to_vec()));
        }
        (items, more)
    }

    /// The exactly-once session table.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Index of the last applied entry.
    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    /// Term of the last applied entry.
    pub fn applied_term(&self) -> Term {
        self.applied_term
    }

    /// The id chosen when the cluster bootstrapped, once applied.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The latest applied cluster configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Metadata describing a snapshot taken now.
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        SnapshotMeta {
            last_index: self.applied_index,
            last_term: self.applied_term,
            config: self.config.clone(),
        }
    }

    /// Encodes the whole state as a snapshot image (`Snapshot::data`).
    pub fn snapshot_image(&self) -> Result<Vec<u8>, ImageError> {
        self.snapshot_image_sized(0)
    }

    /// [`StateMachine::snapshot_image`] into a buffer of `capacity` bytes to
    /// start with (e.g. the previous image's size), saving the copies of
    /// growing a 100 MB buffer.
    pub fn snapshot_image_sized(&self, capacity: usize) -> Result<Vec<u8>, ImageError> {
        let mut writer = self.image_writer(capacity)?;
        writer.step(&self.map, usize::MAX, usize::MAX)?;
        writer.finish()
    }

    fn image_writer(&self, capacity: usize) -> Result<ImageWriter, ImageError> {
        // Room for the whole image up front (lengths and revisions are at
        // most 30 bytes an entry): growing a big buffer would copy it all
        // within one slice. Pages never written are never touched.
        let bound = self.map_bytes as usize + 30 * self.map.len() + (64 << 10);
        ImageWriter::begin(
            self.applied_index,
            self.applied_term,
            &self.config,
            &self.cluster_id,
            self.map.len(),
            self.sessions.to_image(),
            capacity.max(bound),
        )
    }

    /// Starts writing an image of the state as it is now, to be written a
    /// slice at a time by [`StateMachine::continue_image`] while entries
    /// are applied meanwhile. Replaces an image in progress.
    pub fn begin_image(&mut self, capacity: usize) -> Result<(), ImageError> {
        self.writer.0 = Some(Box::new(self.image_writer(capacity)?));
        Ok(())
    }

    /// Writes up to `max_keys` keys (or about `max_bytes` bytes) more of the
    /// image in progress.
    pub fn continue_image(
        &mut self,
        max_keys: usize,
        max_bytes: usize,
    ) -> Result<ImageProgress, ImageError> {
        let Some(writer) = self.writer.0.as_mut() else {
            return Ok(ImageProgress::Idle);
        };
        let done = match writer.step(&self.map, max_keys, max_bytes) {
            Ok(done) => done,
            Err(err) => {
                self.writer.0 = None;
                return Err(err);
            }
        };
        if !done {
            return Ok(ImageProgress::Pending);
        }
        let Some(writer) = self.writer.0.take() else {
            return Ok(ImageProgress::Idle);
        };
        let (index, term) = writer.point();
        Ok(ImageProgress::Done {
            index,
            term,
            data: writer.finish()?,
        })
    }

    /// Bytes of keys and values the map holds.
    pub fn data_bytes(&self) -> u64 {
        self.map_bytes
    }

    /// Decodes and checks an image without installing it.
    pub fn from_image(meta: &SnapshotMeta, data: &[u8]) -> Result<StateMachine, RestoreError> {
        let sm = if let Some(rest) = data.strip_prefix(&IMAGE_MAGIC) {
            let body = checked_body(rest)?;
            let image: Image<ClusterConfig, RevMapIn, Option<String>, sessions::SessionsImage> =
                types::decode(body)?;
            StateMachine {
                map: image.map.0,
                map_bytes: 0,
                applied_index: image.applied_index,
                applied_term: image.applied_term,
                config: image.config,
                cluster_id: image.cluster_id,
                sessions: Sessions::from_image(image.sessions),
                writer: InProgress::default(),
            }
        } else if let Some(rest) = data.strip_prefix(&IMAGE2_MAGIC) {
            let body = checked_body(rest)?;
            let image: OldImage<ClusterConfig, true> = types::decode(body)?;
            StateMachine {
                map: image.map,
                map_bytes: 0,
                applied_index: image.applied_index,
                applied_term: image.applied_term,
                config: image.config,
                cluster_id: image.cluster_id,
                sessions: Sessions::default(),
                writer: InProgress::default(),
            }
        } else {
            let image: OldImage<types::LegacyClusterConfig, false> = types::decode(data)?;
            StateMachine {
                map: image.map,
                map_bytes: 0,
                applied_index: image.applied_index,
                applied_term: image.applied_term,
                config: image.config.into(),
                cluster_id: None,
                sessions: Sessions::default(),
                writer: InProgress::default(),
            }
        };
        let mut sm = sm;
        sm.map_bytes = sm
            .map
            .iter()
            .map(|item| (item.key().len() + item.value().len()) as u64)
            .sum();
        if sm.applied_index != meta.last_index {
            return Err(RestoreError::IndexMismatch {
                image: sm.applied_index,
                meta: meta.last_index,
            });
        }
        Ok(sm)
    }

    /// Replaces the whole state with a snapshot image.
    pub fn restore(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), RestoreError> {
        *self = StateMachine::from_image(meta, data)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn set(index: LogIndex, k: &str, v: &str) -> Entry {
        let cmd = Command::Set {
            key: k.into(),
            value: v.into(),
        };
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Command(cmd).into(),
        }
    }

    #[test]
    fn apply_is_idempotent_and_ordered() {
        let mut sm = StateMachine::new();
        assert!(sm.apply(&set(1, "a", "1")));
        assert!(sm.apply(&set(2, "b", "2")));
        assert!(!sm.apply(&set(2, "b", "changed")));
        assert!(!sm.apply(&set(1, "a", "changed")));
        let del = Entry {
            term: 2,
            index: 3,
            payload: EntryPayload::Command(Command::Delete { key: b"a".to_vec() }).into(),
        };
        assert!(sm.apply(&del));
        assert!(sm.apply(&Entry {
            term: 2,
            index: 4,
            payload: EntryPayload::Noop.into()
        }));
        assert_eq!(
            (sm.get(b"a"), sm.get(b"b"), sm.len()),
            (None, Some(&b"2"[..]), 1)
        );
        assert_eq!((sm.applied_index(), sm.applied_term()), (4, 2));
    }

    #[test]
    fn config_entries_only_change_config() {
        let mut sm = StateMachine::new();
        let mut config = ClusterConfig::default();
        config.voters.insert(
            "n1".into(),
            types::MemberAddr {
                raft_addr: "a:1".into(),
                client_addr: "a:2".into(),
            },
        );
        sm.apply(&Entry {
            term: 1,
            index: 1,
            payload: EntryPayload::Config(config.clone()).into(),
        });
        assert_eq!((sm.config(), sm.len(), sm.applied_index()), (&config, 0, 1));
    }

    #[test]
    fn image_round_trip_with_binary_bytes() {
        let mut sm = StateMachine::new();
        for i in 1..=50u64 {
            let cmd = Command::Set {
                key: vec![0xff, i as u8, 0],
                value: vec![i as u8; i as usize],
            };
            sm.apply(&Entry {
                term: 3,
                index: i,
                payload: EntryPayload::Command(cmd).into(),
            });
        }
        let image = sm.snapshot_image().unwrap();
        let mut restored = StateMachine::new();
        restored.restore(&sm.snapshot_meta(), &image).unwrap();
        assert_eq!(restored, sm);
        let bad_meta = SnapshotMeta {
            last_index: 7,
            ..sm.snapshot_meta()
        };
        assert!(matches!(
            restored.restore(&bad_meta, &image),
            Err(RestoreError::IndexMismatch { .. })
        ));
        assert!(matches!(
            restored.restore(&sm.snapshot_meta(), &image[..5]),
            Err(RestoreError::Checksum)
        ));
        // One flipped bit anywhere in the body is caught by the checksum.
        let mut damaged = image.clone();
        let at = damaged.len() / 2;
        damaged[at] ^= 0x10;
        assert!(matches!(
            restored.restore(&sm.snapshot_meta(), &damaged),
            Err(RestoreError::Checksum)
        ));
    }

    fn cmd(index: LogIndex, command: Command) -> Entry {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Command(command).into(),
        }
    }

    fn cas(key: &str, expected: LogIndex, value: &str) -> Command {
        Command::Cas {
            key: key.into(),
            expected,
            value: value.into(),
        }
    }

    fn result(sm: &mut StateMachine, e: Entry) -> WriteResult {
        sm.apply_entry(&e).unwrap().result.unwrap()
    }

    #[test]
    fn cas_and_cad_decide_on_mod_rev() {
        let mut sm = StateMachine::new();
        assert_eq!(
            result(&mut sm, cmd(1, cas("k", 0, "a"))),
            WriteResult::Rev(1)
        );
        assert_eq!(sm.get_rev(b"k"), Some((1, &b"a"[..])));
        // Stale expectation: conflict with the current revision, no change.
        let applied = sm.apply_entry(&cmd(2, cas("k", 0, "b"))).unwrap();
        assert_eq!(applied.result, Some(WriteResult::Conflict(1)));
        assert_eq!(applied.change, None);
        assert_eq!(
            result(&mut sm, cmd(3, cas("k", 1, "c"))),
            WriteResult::Rev(3)
        );
        assert_eq!(sm.get_rev(b"k"), Some((3, &b"c"[..])));
        let cad = |key: &str, expected| Command::Cad {
            key: key.into(),
            expected,
        };
        assert_eq!(
            result(&mut sm, cmd(4, cad("k", 1))),
            WriteResult::Conflict(3)
        );
        assert_eq!(
            result(&mut sm, cmd(5, cad("gone", 0))),
            WriteResult::Conflict(0)
        );
        let applied = sm.apply_entry(&cmd(6, cad("k", 3))).unwrap();
        assert_eq!(applied.result, Some(WriteResult::Rev(6)));
        assert_eq!(
            applied.change,
            Some(Change {
                key: b"k".to_vec(),
                value: None
            })
        );
        assert_eq!(sm.mod_rev(b"k"), 0);
        // A DELETE of a missing key uses a revision but changes nothing.
        let applied = sm
            .apply_entry(&cmd(7, Command::Delete { key: b"k".to_vec() }))
            .unwrap();
        assert_eq!(
            (applied.result, applied.change),
            (Some(WriteResult::Ok), None)
        );
        assert_eq!(sm.applied_index(), 7);
    }

    #[test]
    fn scan_pages_in_byte_order_within_a_prefix() {
        let mut sm = StateMachine::new();
        for (i, k) in ["a/1", "a/2", "a/3", "b/1", "a", "z"].iter().enumerate() {
            sm.apply(&set(i as u64 + 1, k, "v"));
        }
        let keys = |items: Vec<ScanItem>| -> Vec<String> {
            items
                .into_iter()
                .map(|(k, _, _)| String::from_utf8(k).unwrap())
                .collect()
        };
        let (items, more) = sm.scan(b"a/", None, 2);
        assert_eq!(
            (keys(items), more),
            (vec!["a/1".into(), "a/2".into()], true)
        );
        let (items, more) = sm.scan(b"a/", Some(b"a/2"), 2);
        assert_eq!((keys(items), more), (vec!["a/3".to_string()], false));
        let (items, more) = sm.scan(b"", Some(b"a/3"), 10);
        assert_eq!((keys(items), more), (vec!["b/1".into(), "z".into()], false));
        let (items, _) = sm.scan(b"b/", Some(b"a"), 10);
        assert_eq!(items, vec![(b"b/1".to_vec(), 4, b"v".to_vec())]);
        assert_eq!(sm.scan(b"c", None, 10), (vec![], false));
    }

    fn req(index: LogIndex, client: &str, seq: u64, now_ms: u64, command: Command) -> Entry {
        cmd(
            index,
            Command::Session {
                client: client.into(),
                seq,
                now_ms,
                ttl_ms: 1000,
                command: Box::new(command),
            },
        )
    }

    #[test]
    fn sessions_apply_once_and_survive_images() {
        let mut sm = StateMachine::new();
        assert_eq!(
            result(&mut sm, req(1, "c", 1, 10, cas("k", 0, "a"))),
            WriteResult::Rev(1)
        );
        // The retry (a new entry) gets the first reply and changes nothing.
        let applied = sm
            .apply_entry(&req(2, "c", 1, 20, cas("k", 0, "a")))
            .unwrap();
        assert_eq!(
            (applied.result, applied.change),
            (Some(WriteResult::Rev(1)), None)
        );
        assert_eq!(sm.get_rev(b"k"), Some((1, &b"a"[..])));
        let image = sm.snapshot_image().unwrap();
        let mut back = StateMachine::from_image(&sm.snapshot_meta(), &image).unwrap();
        assert_eq!(back, sm);
        let set_b = Command::Set {
            key: b"k".to_vec(),
            value: b"b".to_vec(),
        };
        assert_eq!(
            result(&mut back, req(3, "c", 1, 30, set_b.clone())),
            WriteResult::Rev(1)
        );
        assert_eq!(
            result(&mut back, req(4, "c", 2, 30, set_b.clone())),
            WriteResult::Ok
        );
        // Idle past the ttl by the entries' clock: expired, not applied.
        assert_eq!(
            result(&mut back, req(5, "other", 1, 5000, set_b.clone())),
            WriteResult::Ok
        );
        assert_eq!(
            result(&mut back, req(6, "c", 2, 5000, set_b)),
            WriteResult::SessionExpired
        );
        assert_eq!(back.sessions().len(), 1);
        let image = back.snapshot_image().unwrap();
        assert_eq!(
            StateMachine::from_image(&back.snapshot_meta(), &image).unwrap(),
            back
        );
    }

    /// An image written a few keys at a time while SETs, DELETEs, CASes and
    /// session writes land on keys before, at and after its cursor has
    /// exactly the bytes of a one-shot image of the state it began at.
    #[test]
    fn an_image_written_in_slices_under_writes_is_the_image_of_its_point() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut next = move |n: u64| rng.random_range(0..n);
        for round in 0..300 {
            let mut sm = StateMachine::new();
            let mut index = 0;
            let keys = 1 + next(40);
            let mut write = |sm: &mut StateMachine, next: &mut dyn FnMut(u64) -> u64| {
                index += 1;
                let key = format!("k{:02}", next(keys + 5));
                let command = match next(5) {
                    0 => Command::Delete {
                        key: key.clone().into_bytes(),
                    },
                    1 => cas(&key, sm.mod_rev(key.as_bytes()), &format!("c{index}")),
                    2 => Command::Session {
                        client: b"c".to_vec(),
                        seq: index,
                        now_ms: index,
                        ttl_ms: 1_000_000,
                        command: Box::new(Command::Set {
                            key: key.clone().into_bytes(),
                            value: format!("s{index}").into_bytes(),
                        }),
                    },
                    _ => Command::Set {
                        key: key.clone().into_bytes(),
                        value: format!("v{index}").into_bytes(),
                    },
                };
                assert!(sm.apply(&cmd(index, command)));
            };
            for _ in 0..next(60) {
                write(&mut sm, &mut next);
            }
            let frozen = sm.clone();
            sm.begin_image(0).unwrap();
            let data = loop {
                for _ in 0..next(4) {
                    write(&mut sm, &mut next);
                }
                match sm.continue_image(1 + next(3) as usize, usize::MAX).unwrap() {
                    ImageProgress::Pending => {}
                    ImageProgress::Done {
                        index: at, data, ..
                    } => {
                        assert_eq!(at, frozen.applied_index());
                        break data;
                    }
                    ImageProgress::Idle => panic!("round {round}: image lost"),
                }
            };
            assert_eq!(data, frozen.snapshot_image().unwrap(), "round {round}");
            let mut back = StateMachine::new();
            back.restore(&frozen.snapshot_meta(), &data).unwrap();
            assert_eq!(back, frozen);
        }
        // A restore drops the image in progress.
        let mut sm = StateMachine::new();
        sm.apply(&set(1, "a", "1"));
        let image = sm.snapshot_image().unwrap();
        sm.begin_image(0).unwrap();
        sm.restore(&sm.snapshot_meta(), &image).unwrap();
        assert!(matches!(
            sm.continue_image(10, 10).unwrap(),
            ImageProgress::Idle
        ));
    }

    #[test]
    fn version_2_images_are_still_read() {
        #[derive(Serialize)]
        struct Old<'a> {
            applied_index: LogIndex,
            applied_term: Term,
            config: ClusterConfig,
            cluster_id: Option<String>,
            map: BTreeMap<&'a serde_bytes::Bytes, &'a serde_bytes::Bytes>,
        }
        let mut map = BTreeMap::new();
        map.insert(serde_bytes::Bytes::new(b"k"), serde_bytes::Bytes::new(b"v"));
        let body = types::encode(&Old {
            applied_index: 9,
            applied_term: 2,
            config: ClusterConfig::default(),
            cluster_id: Some("c1".into()),
            map,
        })
        .unwrap();
        let mut image = b"TSS2".to_vec();
        image.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
        image.extend_from_slice(&body);
        let meta = SnapshotMeta {
            last_index: 9,
            last_term: 2,
            config: ClusterConfig::default(),
        };
        let sm = StateMachine::from_image(&meta, &image).unwrap();
        assert_eq!(sm.get_rev(b"k"), Some((9, &b"v"[..])));
        assert_eq!(sm.cluster_id(), Some("c1"));
    }

    #[test]
    fn release_1_images_are_still_read() {
        #[derive(Serialize)]
        struct Old<'a> {
            applied_index: LogIndex,
            applied_term: Term,
            config: types::LegacyClusterConfig,
            map: BTreeMap<&'a serde_bytes::Bytes, &'a serde_bytes::Bytes>,
        }
        let long = vec![0xfe; 300];
        let mut map = BTreeMap::new();
        map.insert(serde_bytes::Bytes::new(b"a"), serde_bytes::Bytes::new(b""));
        map.insert(
            serde_bytes::Bytes::new(b"b"),
            serde_bytes::Bytes::new(&long),
        );
        let image = types::encode(&Old {
            applied_index: 300,
            applied_term: 4,
            config: types::LegacyClusterConfig::default(),
            map,
        })
        .unwrap();
        let meta = SnapshotMeta {
            last_index: 300,
            last_term: 4,
            config: ClusterConfig::default(),
        };
        let sm = StateMachine::from_image(&meta, &image).unwrap();
        assert_eq!(
            (sm.get_rev(b"a"), sm.get_rev(b"b"), sm.len()),
            (Some((300, &b""[..])), Some((300, &long[..])), 2)
        );
        assert_eq!(
            (sm.cluster_id(), sm.applied_term(), sm.data_bytes()),
            (None, 4, 302)
        );
        // Its keys carry on into a current image like any others.
        let again = StateMachine::from_image(&meta, &sm.snapshot_image().unwrap()).unwrap();
        assert_eq!(again, sm);
    }
}
