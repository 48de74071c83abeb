//! The key-value state machine the Raft log is applied to: an ordered map of
//! raw bytes, the applied index and the latest cluster configuration, plus the
//! snapshot image of all three.
//!
//! Applying is idempotent by index (an entry at or below `applied` is skipped),
//! so replaying a log over a restored snapshot is always safe. This is the one
//! place new commands (compare-and-set, client sessions) get their effect.
//! It does no I/O; the storage layer persists the images it produces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::types::{
    self, ClusterConfig, Command, Entry, EntryPayload, LogIndex, SnapshotMeta, Term,
};

/// Keys to values. Boxed slices keep memory close to the raw bytes (no spare capacity).
type KvMap = BTreeMap<Box<[u8]>, Box<[u8]>>;

/// The replicated key-value map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateMachine {
    map: KvMap,
    applied_index: LogIndex,
    applied_term: Term,
    config: ClusterConfig,
    cluster_id: Option<String>,
}

/// First bytes of a snapshot image: format version 2, checksummed.
/// An image is `IMAGE_MAGIC | crc32c(body) (u32 LE) | body`, the body being
/// an [`Image`] in the fixed codec. Release 1 images (a bare [`LegacyImage`])
/// are still read.
pub const IMAGE_MAGIC: [u8; 4] = *b"TSS2";

/// The encoded form of a snapshot's `data` (after the header).
#[derive(Serialize, Deserialize)]
struct Image<C, M, I> {
    applied_index: LogIndex,
    applied_term: Term,
    config: C,
    cluster_id: I,
    map: M,
}

/// Release 1's image: no header, no cluster id.
#[derive(Deserialize)]
struct LegacyImage<C, M> {
    applied_index: LogIndex,
    applied_term: Term,
    config: C,
    map: M,
}

/// Borrows the map for encoding: keys and values as byte strings (one length
/// and one copy each, not one value per byte).
struct MapOut<'a>(&'a KvMap);

impl Serialize for MapOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(k, v)| (serde_bytes::Bytes::new(k), serde_bytes::Bytes::new(v))),
        )
    }
}

/// The decoded map, built in one pass from the (sorted) image.
struct MapIn(KvMap);

impl<'de> Deserialize<'de> for MapIn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = MapIn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of byte strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<MapIn, A::Error> {
                let mut pairs = Vec::with_capacity(access.size_hint().unwrap_or(0).min(1 << 20));
                while let Some((k, v)) =
                    access.next_entry::<serde_bytes::ByteBuf, serde_bytes::ByteBuf>()?
                {
                    pairs.push((
                        k.into_vec().into_boxed_slice(),
                        v.into_vec().into_boxed_slice(),
                    ));
                }
                Ok(MapIn(pairs.into_iter().collect()))
            }
        }
        deserializer.deserialize_map(Visit)
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

impl StateMachine {
    /// An empty map with nothing applied.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies `entry` unless it was applied already. Returns whether it took effect.
    pub fn apply(&mut self, entry: &Entry) -> bool {
        if entry.index <= self.applied_index {
            return false;
        }
        match &entry.payload {
            EntryPayload::Noop => {}
            EntryPayload::Config(config) => self.config = config.clone(),
            EntryPayload::Bootstrap { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
            }
            EntryPayload::Command(Command::Set { key, value }) => {
                self.map
                    .insert(key.as_slice().into(), value.as_slice().into());
            }
            EntryPayload::Command(Command::Delete { key }) => {
                self.map.remove(key.as_slice());
            }
        }
        self.applied_index = entry.index;
        self.applied_term = entry.term;
        true
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|v| &**v)
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
    pub fn snapshot_image(&self) -> Result<Vec<u8>, bincode::error::EncodeError> {
        self.snapshot_image_sized(0)
    }

    /// [`StateMachine::snapshot_image`] into a buffer of `capacity` bytes to
    /// start with (e.g. the previous image's size), saving the copies of
    /// growing a 100 MB buffer.
    pub fn snapshot_image_sized(
        &self,
        capacity: usize,
    ) -> Result<Vec<u8>, bincode::error::EncodeError> {
        let mut out = Vec::with_capacity(capacity.max(8));
        out.extend_from_slice(&IMAGE_MAGIC);
        out.extend_from_slice(&[0; 4]);
        bincode::serde::encode_into_std_write(
            &Image {
                applied_index: self.applied_index,
                applied_term: self.applied_term,
                config: &self.config,
                cluster_id: &self.cluster_id,
                map: MapOut(&self.map),
            },
            &mut out,
            types::codec_config(),
        )?;
        let crc = crc32c::crc32c(&out[8..]);
        out[4..8].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes and checks an image without installing it.
    pub fn from_image(meta: &SnapshotMeta, data: &[u8]) -> Result<StateMachine, RestoreError> {
        let sm = match data.strip_prefix(&IMAGE_MAGIC) {
            Some(rest) => {
                let (crc, body) = rest.split_at_checked(4).ok_or(RestoreError::Checksum)?;
                if crc32c::crc32c(body).to_le_bytes() != crc {
                    return Err(RestoreError::Checksum);
                }
                let image: Image<ClusterConfig, MapIn, Option<String>> = types::decode(body)?;
                StateMachine {
                    map: image.map.0,
                    applied_index: image.applied_index,
                    applied_term: image.applied_term,
                    config: image.config,
                    cluster_id: image.cluster_id,
                }
            }
            None => {
                let image: LegacyImage<types::LegacyClusterConfig, MapIn> = types::decode(data)?;
                StateMachine {
                    map: image.map.0,
                    applied_index: image.applied_index,
                    applied_term: image.applied_term,
                    config: image.config.into(),
                    cluster_id: None,
                }
            }
        };
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

    fn set(index: LogIndex, k: &str, v: &str) -> Entry {
        let cmd = Command::Set {
            key: k.into(),
            value: v.into(),
        };
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Command(cmd),
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
            payload: EntryPayload::Command(Command::Delete { key: b"a".to_vec() }),
        };
        assert!(sm.apply(&del));
        assert!(sm.apply(&Entry {
            term: 2,
            index: 4,
            payload: EntryPayload::Noop
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
            payload: EntryPayload::Config(config.clone()),
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
                payload: EntryPayload::Command(cmd),
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
}
