//! Snapshot images over real loopback gRPC: a multi-chunk image arrives
//! whole and once, messages behind it are not held up, and a damaged,
//! disordered, truncated or oversized image is refused before the node
//! sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use titanstore_core::raft::{Message, MessageBody};
use titanstore_core::transport::{CHUNK_BYTES, Dialer, Envelope, PeerSender, SnapshotSource};
use titanstore_core::types::{ClusterConfig, Snapshot, SnapshotMeta};
use titanstore_proto::SnapshotChunk;
use titanstore_proto::raft_client::RaftClient;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Serves an image from memory and counts the loads.
struct Source {
    snapshot: Snapshot,
    loads: AtomicUsize,
}

impl SnapshotSource for Source {
    fn latest(&self) -> Result<Option<Arc<Snapshot>>, String> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Arc::new(self.snapshot.clone())))
    }
}

fn image(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn meta() -> SnapshotMeta {
    SnapshotMeta {
        last_index: 42,
        last_term: 3,
        config: ClusterConfig::default(),
    }
}

/// A Raft endpoint for node `b` on a free loopback port, with its inbox.
async fn endpoint() -> (
    String,
    mpsc::Receiver<Envelope>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _ = titanstore_core::transport::serve(listener, "b".into(), tx, None, async {
            let _ = stopped.await;
        })
        .await;
    });
    (addr, rx, stop, server)
}

async fn next(inbox: &mut mpsc::Receiver<Envelope>) -> Envelope {
    tokio::time::timeout(Duration::from_secs(20), inbox.recv())
        .await
        .expect("nothing arrived in time")
        .expect("inbox closed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_chunk_image_arrives_whole_once_and_holds_nothing_up() {
    let (addr, mut inbox, stop, server) = endpoint().await;
    let data = image(3 * CHUNK_BYTES + CHUNK_BYTES / 2 + 7);
    let source = Arc::new(Source {
        snapshot: Snapshot {
            meta: meta(),
            data: data.clone(),
        },
        loads: AtomicUsize::new(0),
    });
    let dialer = Dialer {
        snapshots: Arc::clone(&source) as Arc<dyn SnapshotSource>,
        tls: None,
    };
    let sender = PeerSender::spawn(addr, &dialer);
    let ask = || Message {
        from: "a".into(),
        to: "b".into(),
        body: MessageBody::InstallSnapshot {
            term: 3,
            meta: meta(),
            data: Vec::new(),
        },
    };
    let ping = Message {
        from: "a".into(),
        to: "b".into(),
        body: MessageBody::TimeoutNow { term: 3 },
    };
    // The core asks again on a timer; the copies must not travel.
    sender.send(ask(), Arc::from("c1"));
    sender.send(ask(), Arc::from("c1"));
    sender.send(ping.clone(), Arc::from("c1"));
    let mut image_seen = None;
    let mut ping_seen = false;
    while image_seen.is_none() || !ping_seen {
        let Envelope { cluster_id, msg } = next(&mut inbox).await;
        assert_eq!(cluster_id, "c1");
        match msg.body {
            MessageBody::InstallSnapshot { term, meta, data } => {
                assert!(image_seen.is_none(), "the image arrived twice");
                assert_eq!((msg.from.as_str(), term), ("a", 3));
                image_seen = Some((meta, data));
            }
            MessageBody::TimeoutNow { .. } => ping_seen = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    let (got_meta, got_data) = image_seen.unwrap();
    assert_eq!(got_meta, meta());
    assert!(got_data == data, "the image arrived changed");
    // Asked again right after delivery: the follower is still installing it.
    sender.send(ask(), Arc::from("c1"));
    sender.send(ping, Arc::from("c1"));
    let after = next(&mut inbox).await;
    assert!(
        matches!(after.msg.body, MessageBody::TimeoutNow { .. }),
        "{:?}",
        after.msg.body
    );
    assert_eq!(source.loads.load(Ordering::SeqCst), 1, "image re-read");
    drop(sender);
    let _ = stop.send(());
    server.await.unwrap();
}

/// Sends `chunks` on a raw Snapshot call and returns how it ended.
async fn raw_send(addr: &str, chunks: Vec<SnapshotChunk>) -> Result<(), tonic::Status> {
    let mut client = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    client
        .snapshot(futures_util::stream::iter(chunks))
        .await
        .map(|_| ())
}

fn chunked(data: &[u8], piece: usize) -> Vec<SnapshotChunk> {
    let config = titanstore_core::types::encode(&ClusterConfig::default()).unwrap();
    let crc = crc32c::crc32c(data);
    let mut out = Vec::new();
    for (n, part) in data.chunks(piece).enumerate() {
        let offset = n * piece;
        let done = offset + part.len() == data.len();
        let mut chunk = SnapshotChunk {
            offset: offset as u64,
            data: part.to_vec().into(),
            done,
            crc32c: if done { crc } else { 0 },
            ..SnapshotChunk::default()
        };
        if n == 0 {
            chunk.from = "a".into();
            chunk.to = "b".into();
            chunk.term = 3;
            chunk.last_index = 42;
            chunk.last_term = 3;
            chunk.config = config.clone().into();
            chunk.total_len = data.len() as u64;
        }
        out.push(chunk);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_disordered_truncated_or_huge_image_is_refused() {
    let (addr, mut inbox, stop, server) = endpoint().await;
    let data = image(10_000);

    let mut damaged = chunked(&data, 4096);
    let mut bytes = damaged[1].data.to_vec();
    bytes[5] ^= 0x40;
    damaged[1].data = bytes.into();
    let mut disordered = chunked(&data, 4096);
    disordered.swap(1, 2);
    let mut truncated = chunked(&data, 4096);
    truncated.pop();
    let mut huge = chunked(&data, 4096);
    huge[0].total_len = u64::MAX;
    let mut elsewhere = chunked(&data, 4096);
    elsewhere[0].to = "c".into();
    for (what, chunks) in [
        ("damaged", damaged),
        ("disordered", disordered),
        ("truncated", truncated),
        ("huge", huge),
        ("addressed elsewhere", elsewhere),
    ] {
        let status = raw_send(&addr, chunks).await.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status}"
        );
    }
    assert!(
        inbox.try_recv().is_err(),
        "a refused image reached the node"
    );
    // The same image, whole, is taken.
    raw_send(&addr, chunked(&data, 4096)).await.unwrap();
    let got = next(&mut inbox).await;
    match got.msg.body {
        MessageBody::InstallSnapshot { data: got, .. } => assert!(got == data),
        other => panic!("unexpected {other:?}"),
    }
    let _ = stop.send(());
    server.await.unwrap();
}
