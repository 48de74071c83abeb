//! Property tests of the key-value state machine: it behaves like a plain
//! map, replaying applied entries changes nothing, and a snapshot image
//! restores exactly the same state.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use titanstore_core::state_machine::StateMachine;
use titanstore_core::types::{Command, Entry, EntryPayload};

fn payload() -> impl Strategy<Value = EntryPayload> {
    let key = proptest::collection::vec(0..4u8, 0..3);
    let value = proptest::collection::vec(any::<u8>(), 0..8);
    prop_oneof![
        4 => (key.clone(), value).prop_map(|(key, value)| EntryPayload::Command(Command::Set { key, value })),
        2 => key.prop_map(|key| EntryPayload::Command(Command::Delete { key })),
        1 => Just(EntryPayload::Noop),
    ]
}

proptest! {
    #[test]
    fn behaves_like_a_map_and_snapshots_round_trip(
        payloads in proptest::collection::vec(payload(), 0..60),
        cut in 0..60usize,
    ) {
        let entries: Vec<Entry> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Entry { term: 1 + i as u64 / 10, index: 1 + i as u64, payload: payload.into() })
            .collect();
        let mut sm = StateMachine::new();
        let mut model = BTreeMap::new();
        for e in &entries {
            prop_assert!(sm.apply(e));
            match &*e.payload {
                EntryPayload::Command(Command::Set { key, value }) => { model.insert(key.clone(), value.clone()); }
                EntryPayload::Command(Command::Delete { key }) => { model.remove(key); }
                _ => {}
            }
        }
        prop_assert_eq!(sm.len(), model.len());
        for (k, v) in &model {
            prop_assert_eq!(sm.get(k), Some(v.as_slice()));
        }
        // Replaying any suffix of applied entries is a no-op.
        let before = sm.clone();
        for e in &entries[cut.min(entries.len())..] {
            prop_assert!(!sm.apply(e));
        }
        prop_assert_eq!(&sm, &before);
        // The image restores the same state.
        let mut restored = StateMachine::new();
        restored.restore(&sm.snapshot_meta(), &sm.snapshot_image().unwrap()).unwrap();
        prop_assert_eq!(&restored, &sm);
    }
}
