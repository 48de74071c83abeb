//! The state machine's ordered key-value map, kept compact: one heap
//! allocation per key, holding the key, its `mod_rev` and its value together.
//!
//! At a million keys the map is most of a node's memory. A map of boxed keys
//! to boxed values costs two allocations per key (each with its allocator
//! header and rounding) plus a 40-byte tree slot; an [`Item`] is one boxed
//! slice laid out as `[key_len varint][key][mod_rev varint][value]` in a
//! 16-byte slot. It orders and compares by its key alone and borrows as the
//! key, so the set is looked up and ranged by `&[u8]` like a map. This module
//! owns the layout; nothing else reads an item's bytes.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeSet, btree_set};
use std::ops::RangeBounds;

use crate::types::LogIndex;

/// A key with its `mod_rev` and value, in one allocation (see the module docs).
#[derive(Clone)]
pub struct Item(Box<[u8]>);

/// Appends `n` as LEB128 (7 bits a byte, low first, high bit: more follow).
fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The bytes [`put_varint`] writes for `n`.
fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a varint [`put_varint`] wrote at the start of `bytes`: the number
/// and the bytes after it.
fn take_varint(bytes: &[u8]) -> (u64, &[u8]) {
    let mut n = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        n |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (n, &bytes[i + 1..]);
        }
    }
    // Items are only built by `Item::new`, which always ends a varint.
    (n, &[])
}

impl Item {
    /// An item of exactly the size of its parts (no spare capacity).
    pub fn new(key: &[u8], mod_rev: LogIndex, value: &[u8]) -> Item {
        let len = varint_len(key.len() as u64) + key.len() + varint_len(mod_rev) + value.len();
        let mut bytes = Vec::with_capacity(len);
        put_varint(&mut bytes, key.len() as u64);
        bytes.extend_from_slice(key);
        put_varint(&mut bytes, mod_rev);
        bytes.extend_from_slice(value);
        debug_assert_eq!(bytes.len(), len);
        Item(bytes.into_boxed_slice())
    }

    /// Key, `mod_rev` and value.
    pub fn parts(&self) -> (&[u8], LogIndex, &[u8]) {
        let (key_len, rest) = take_varint(&self.0);
        let (key, rest) = rest.split_at(key_len as usize);
        let (mod_rev, value) = take_varint(rest);
        (key, mod_rev, value)
    }

    pub fn key(&self) -> &[u8] {
        let (key_len, rest) = take_varint(&self.0);
        &rest[..key_len as usize]
    }

    /// The revision that last wrote the key.
    pub fn mod_rev(&self) -> LogIndex {
        self.parts().1
    }

    pub fn value(&self) -> &[u8] {
        self.parts().2
    }
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (key, mod_rev, value) = self.parts();
        f.debug_struct("Item")
            .field("key", &key)
            .field("mod_rev", &mod_rev)
            .field("value", &value)
            .finish()
    }
}

// Equality and order are the key's alone, as `Borrow<[u8]>` requires: the
// set holds one item per key. [`KvMap`]'s own equality compares whole items.
impl PartialEq for Item {
    fn eq(&self, other: &Item) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Item) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Item {
    fn cmp(&self, other: &Item) -> Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<[u8]> for Item {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// Keys to their `mod_rev` and value, in key order.
#[derive(Clone, Debug, Default)]
pub struct KvMap(BTreeSet<Item>);

impl KvMap {
    pub fn get(&self, key: &[u8]) -> Option<&Item> {
        self.0.get(key)
    }

    /// Stores `item`, returning the item it replaces (same key), if any.
    pub fn insert(&mut self, item: Item) -> Option<Item> {
        self.0.replace(item)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<Item> {
        self.0.take(key)
    }

    /// The items whose keys are in `range`, in key order.
    /// (A named type: an `impl Iterator` would also borrow what `range` borrows.)
    pub fn range<R: RangeBounds<[u8]>>(&self, range: R) -> btree_set::Range<'_, Item> {
        self.0.range::<[u8], R>(range)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Item> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Built from items in any order; of equal keys the last one stays.
impl FromIterator<Item> for KvMap {
    fn from_iter<T: IntoIterator<Item = Item>>(items: T) -> KvMap {
        KvMap(items.into_iter().collect())
    }
}

/// Two maps are equal when they hold the same keys with the same `mod_rev`
/// and value (not just the same keys, as items compare).
impl PartialEq for KvMap {
    fn eq(&self, other: &KvMap) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other.iter())
                .all(|(a, b)| a.parts() == b.parts())
    }
}

impl Eq for KvMap {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Bound;

    #[test]
    fn varints_round_trip_at_every_width() {
        for n in [0, 1, 0x7f, 0x80, 0x3fff, 0x4000, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            assert_eq!(out.len(), varint_len(n), "{n}");
            out.push(0xAB);
            assert_eq!(take_varint(&out), (n, &[0xAB][..]), "{n}");
        }
    }

    #[test]
    fn an_item_is_one_exact_allocation_of_its_parts() {
        let value = vec![7u8; 300];
        for (key, rev) in [(&b""[..], 0), (b"k", 1), (&[0xff; 200][..], u64::MAX)] {
            let item = Item::new(key, rev, &value);
            assert_eq!(item.parts(), (key, rev, &value[..]));
            assert_eq!(
                (item.key(), item.mod_rev(), item.value()),
                (key, rev, &value[..])
            );
            let overhead = varint_len(key.len() as u64) + varint_len(rev);
            assert_eq!(item.0.len(), key.len() + value.len() + overhead);
        }
        assert_eq!(Item::new(b"k", 5, b"").parts(), (&b"k"[..], 5, &b""[..]));
    }

    #[test]
    fn items_order_by_key_alone_and_the_map_compares_whole_items() {
        // A long key must not sort by its length prefix.
        let long = vec![b'a'; 200];
        let mut map: KvMap = [
            Item::new(b"b", 1, b"x"),
            Item::new(&long, 2, b"y"),
            Item::new(b"", 3, b"z"),
        ]
        .into_iter()
        .collect();
        let keys: Vec<&[u8]> = map.iter().map(Item::key).collect();
        assert_eq!(keys, vec![&b""[..], &long[..], &b"b"[..]]);
        let old = map.insert(Item::new(b"b", 4, b"new"));
        assert_eq!(old.map(|i| i.mod_rev()), Some(1));
        assert_eq!(
            map.get(b"b").map(Item::parts),
            Some((&b"b"[..], 4, &b"new"[..]))
        );
        let after_a: Vec<&[u8]> = map
            .range((Bound::Excluded(&b"a"[..]), Bound::Unbounded))
            .map(Item::key)
            .collect();
        assert_eq!(after_a, vec![&long[..], &b"b"[..]]);
        let mut other = map.clone();
        assert_eq!(other, map);
        other.insert(Item::new(b"b", 4, b"neW"));
        assert_ne!(other, map);
        other.insert(Item::new(b"b", 5, b"new"));
        assert_ne!(other, map);
        assert_eq!(other.remove(b"b").map(|i| i.mod_rev()), Some(5));
        assert_eq!((other.remove(b"b").is_none(), other.len()), (true, 2));
    }
}
