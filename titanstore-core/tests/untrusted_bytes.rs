//! Every parser a client, a peer or the disk can reach, fed arbitrary bytes:
//! an error or a value, never a panic, with memory bounded. And golden bytes
//! of the on-disk formats, so that a dependency upgrade (bincode, the
//! framing) cannot change what is on disk without a test failing.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use titanstore_core::protocol::{LineCodec, Reply, Request, ScanPage, WatchEvent};
use titanstore_core::state_machine::StateMachine;
use titanstore_core::storage::{SimFs, Storage, StorageOptions, Vfs};
use titanstore_core::types::{ClusterConfig, Command, Entry, EntryPayload, SnapshotMeta};
use tokio_util::codec::Decoder;

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        last_index: 3,
        last_term: 1,
        config: ClusterConfig::default(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn request_and_reply_parsers_take_any_line(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Request::parse(&line);
        let _ = Reply::parse(&line);
        let _ = WatchEvent::parse(&line);
        let _ = ScanPage::parse_header(&line);
        let _ = ScanPage::parse_line(&line);
    }

    #[test]
    fn request_parser_takes_any_words(words in proptest::collection::vec(
        prop_oneof![
            Just("SET".to_string()), Just("GET".to_string()), Just("CAS".to_string()),
            Just("SCAN".to_string()), Just("WATCH".to_string()), Just("REQ".to_string()),
            Just("MEMBER".to_string()), Just("TRANSFER".to_string()), Just("18446744073709551616".to_string()),
            "[a-z0-9-]{0,6}".prop_map(|s| s),
        ],
        0..8,
    )) {
        let _ = Request::parse(words.join(" ").as_bytes());
    }

    #[test]
    fn peer_messages_of_any_bytes_are_refused_or_converted(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        use prost::Message as _;
        if let Ok(wire) = titanstore_proto::RaftMessage::decode(&data[..]) {
            let _ = titanstore_core::transport::from_wire(wire);
        }
    }

    #[test]
    fn line_codec_bounds_memory_on_any_chunks(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
    ) {
        let max = 64;
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::new();
        for chunk in chunks {
            buf.extend_from_slice(&chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(line)) => prop_assert!(line.len() <= max),
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
            // Unterminated input is never held beyond the limit (+ the last chunk).
            prop_assert!(buf.len() <= max + 200);
        }
    }

    // Images with a magic carry a checksum; a release-1 image (no magic)
    // is decoded as it comes: a forged length in it must not allocate.
    #[test]
    fn snapshot_images_of_any_bytes_are_refused_or_restored(
        magic in prop_oneof![Just(&b"TSS3"[..]), Just(&b"TSS2"[..]), Just(&b""[..])],
        data in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let image = [magic, &data[..]].concat();
        let _ = StateMachine::from_image(&meta(), &image);
    }

    #[test]
    fn recovery_takes_any_wal_segment(data in proptest::collection::vec(any::<u8>(), 0..600)) {
        let fs = SimFs::new();
        let dir = Path::new("/node");
        {
            let (_storage, _) = Storage::open(Arc::new(fs.clone()), dir, StorageOptions::default()).unwrap();
        }
        let segment = dir.join("wal").join(format!("{:020}-{:020}.log", 1, 1));
        fs.write(&segment, &data).unwrap();
        fs.sync_file(&segment).unwrap();
        // An error (corruption) or a recovered log; never a panic.
        let _ = Storage::open(Arc::new(fs.clone()), dir, StorageOptions::default());
    }
}

fn entries() -> Vec<Entry> {
    vec![
        Entry {
            index: 1,
            term: 1,
            payload: EntryPayload::Noop.into(),
        },
        Entry {
            index: 2,
            term: 1,
            payload: EntryPayload::Command(Command::Set {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            })
            .into(),
        },
        Entry {
            index: 3,
            term: 1,
            payload: EntryPayload::Command(Command::Delete { key: b"k".to_vec() }).into(),
        },
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The WAL's bytes for three entries. If this changes, the on-disk format
/// changed: bump the format, keep a reader for the old one, then update.
#[test]
fn wal_segment_bytes_are_pinned() {
    let fs = SimFs::new();
    let dir = Path::new("/node");
    let (mut storage, _) =
        Storage::open(Arc::new(fs.clone()), dir, StorageOptions::default()).unwrap();
    storage.append(&entries()).unwrap();
    storage.sync().unwrap();
    let segment = dir.join("wal").join(format!("{:020}-{:020}.log", 1, 1));
    let bytes = fs.file_bytes(&segment).unwrap();
    assert_eq!(hex(&bytes), WAL_GOLDEN, "the WAL format changed");
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// A segment written before the magic existed (release 1) is still read;
/// one of a newer format version is refused, not misread.
#[test]
fn old_segments_are_read_and_newer_versions_refused() {
    let segment = Path::new("/node/wal").join(format!("{:020}-{:020}.log", 1, 1));
    let golden = unhex(WAL_GOLDEN);
    let legacy = &golden[8..];
    let fs = SimFs::new();
    fs.create_dir_all(segment.parent().unwrap()).unwrap();
    fs.write(&segment, legacy).unwrap();
    fs.sync_file(&segment).unwrap();
    let (_, recovered) = Storage::open(
        Arc::new(fs.clone()),
        Path::new("/node"),
        StorageOptions::default(),
    )
    .unwrap();
    assert_eq!(recovered.entries, entries());

    let mut newer = golden.clone();
    newer[7] = 2;
    let fs = SimFs::new();
    fs.create_dir_all(segment.parent().unwrap()).unwrap();
    fs.write(&segment, &newer).unwrap();
    fs.sync_file(&segment).unwrap();
    let err =
        Storage::open(Arc::new(fs), Path::new("/node"), StorageOptions::default()).unwrap_err();
    assert!(err.to_string().contains("format version 2"), "{err}");
}

/// A snapshot image of two keys, pinned the same way.
#[test]
fn snapshot_image_bytes_are_pinned() {
    let mut sm = StateMachine::new();
    for entry in entries().iter().take(2) {
        sm.apply_entry(entry);
    }
    let image = sm.snapshot_image().unwrap();
    assert_eq!(
        hex(&image),
        SNAPSHOT_GOLDEN,
        "the snapshot image format changed"
    );
    let back = StateMachine::from_image(
        &SnapshotMeta {
            last_index: 2,
            last_term: 1,
            config: ClusterConfig::default(),
        },
        &image,
    )
    .unwrap();
    assert_eq!(back.get(b"k"), Some(&b"v"[..]));
}

const WAL_GOLDEN: &str = "545357414c00000104000000347a45337fe122950100000013000000c37321c3170eca8f000301010001020100016b017601030101016b";
const SNAPSHOT_GOLDEN: &str = "54535333bbfbed7602010000000001016b020176000000";
