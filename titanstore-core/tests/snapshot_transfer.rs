//! Snapshot images over real loopback gRPC: a multi-chunk image arrives
//! whole and once, messages behind it are not held up, a send that breaks
//! off is resumed where it stopped (and only where the receiver holds that
//! very image), also after the receiver restarted, and a damaged, disordered, truncated or oversized image is
//! refused before the node sees it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use titanstore_core::raft::{Message, MessageBody};
use titanstore_core::storage::SnapshotFile;
use titanstore_core::transport::{CHUNK_BYTES, Dialer, Envelope, PeerSender, SnapshotSource};
use titanstore_core::types::{ClusterConfig, Snapshot, SnapshotMeta};
use titanstore_proto::raft_client::RaftClient;
use titanstore_proto::{SnapshotChunk, SnapshotOffer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// Serves one image from memory, as it would be read from its file, and
/// counts the opens; the open image tells how many bytes were read of it.
struct Source {
    image: Arc<SnapshotFile>,
    opens: AtomicUsize,
}

impl Source {
    fn new(data: &[u8]) -> Arc<Source> {
        let snapshot = Snapshot {
            meta: meta(),
            data: data.to_vec(),
        };
        Arc::new(Source {
            image: Arc::new(SnapshotFile::from_snapshot(snapshot).unwrap()),
            opens: AtomicUsize::new(0),
        })
    }
}

impl SnapshotSource for Source {
    fn open(&self) -> Result<Option<Arc<SnapshotFile>>, String> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        Ok(Some(Arc::clone(&self.image)))
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

/// A Raft endpoint for node `b` on a free loopback port, with its inbox,
/// receiving images into a directory of its own.
async fn endpoint() -> (
    String,
    mpsc::Receiver<Envelope>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (addr, rx, stop, served) = endpoint_in(dir.path().to_path_buf()).await;
    let server = tokio::spawn(async move {
        served.await.unwrap();
        drop(dir);
    });
    (addr, rx, stop, server)
}

/// A Raft endpoint for node `b` receiving images into `dir`.
async fn endpoint_in(
    dir: std::path::PathBuf,
) -> (
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
        let _ =
            titanstore_core::transport::serve(listener, "b".into(), dir, tx, None, None, async {
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

/// Waits for the image `data` to reach the node and checks that its sender
/// read only what the receiver did not hold (all but `kept` bytes).
async fn expect_resumed(
    inbox: &mut mpsc::Receiver<Envelope>,
    source: &Source,
    data: &[u8],
    kept: u64,
) {
    match next(inbox).await.msg.body {
        MessageBody::InstallSnapshot {
            meta: got,
            data: got_data,
            ..
        } => {
            assert_eq!(got, meta());
            assert!(got_data == data, "the resumed image arrived changed");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        source.image.bytes_read(),
        data.len() as u64 - kept,
        "the sender re-read what the receiver held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_chunk_image_arrives_whole_once_and_holds_nothing_up() {
    let (addr, mut inbox, stop, server) = endpoint().await;
    let data = image(3 * CHUNK_BYTES + CHUNK_BYTES / 2 + 7);
    let source = Source::new(&data);
    let sender = PeerSender::spawn(addr, &dialer(&source));
    let ping = Message {
        from: "a".into(),
        to: "b".into(),
        body: MessageBody::TimeoutNow { term: 3 },
    };
    // The core asks again on a timer; the copies must not travel.
    sender.send(ask_image(), Arc::from("c1"));
    sender.send(ask_image(), Arc::from("c1"));
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
    sender.send(ask_image(), Arc::from("c1"));
    sender.send(ping, Arc::from("c1"));
    let after = next(&mut inbox).await;
    assert!(
        matches!(after.msg.body, MessageBody::TimeoutNow { .. }),
        "{:?}",
        after.msg.body
    );
    assert_eq!(source.opens.load(Ordering::SeqCst), 1, "image opened again");
    assert_eq!(
        source.image.bytes_read(),
        data.len() as u64,
        "image re-read"
    );
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

fn dialer(source: &Arc<Source>) -> Dialer {
    Dialer {
        snapshots: Arc::clone(source) as Arc<dyn SnapshotSource>,
        tls: None,
    }
}

/// What the core hands its peer sender to get an image sent.
fn ask_image() -> Message {
    Message {
        from: "a".into(),
        to: "b".into(),
        body: MessageBody::InstallSnapshot {
            term: 3,
            meta: meta(),
            data: Vec::new(),
        },
    }
}

/// The chunks of the image `data` as a sender sends them, in `piece`s.
fn chunked(data: &[u8], piece: usize) -> Vec<SnapshotChunk> {
    let file = SnapshotFile::from_snapshot(Snapshot {
        meta: meta(),
        data: data.to_vec(),
    })
    .unwrap();
    let config = titanstore_core::types::encode(&ClusterConfig::default()).unwrap();
    let mut out = Vec::new();
    if data.is_empty() {
        let mut chunk = SnapshotChunk {
            done: true,
            ..SnapshotChunk::default()
        };
        header(&mut chunk, &file, &config);
        return vec![chunk];
    }
    for (n, part) in data.chunks(piece).enumerate() {
        let offset = n * piece;
        let mut chunk = SnapshotChunk {
            offset: offset as u64,
            data: part.to_vec().into(),
            done: offset + part.len() == data.len(),
            ..SnapshotChunk::default()
        };
        if n == 0 {
            header(&mut chunk, &file, &config);
        }
        out.push(chunk);
    }
    out
}

/// Makes `chunk` the first of a send of `file`.
fn header(chunk: &mut SnapshotChunk, file: &SnapshotFile, config: &[u8]) {
    chunk.from = "a".into();
    chunk.to = "b".into();
    chunk.term = 3;
    chunk.last_index = 42;
    chunk.last_term = 3;
    chunk.config = config.to_vec().into();
    chunk.total_len = file.image_len;
    chunk.crc32c = file.crc32c;
    chunk.head = file.head.clone().into();
}

/// What the node at `addr` says it holds of the image `data`.
async fn held(addr: &str, data: &[u8], crc_flip: u32) -> u64 {
    let file = SnapshotFile::from_snapshot(Snapshot {
        meta: meta(),
        data: data.to_vec(),
    })
    .unwrap();
    let mut client = RaftClient::connect(format!("http://{addr}")).await.unwrap();
    let offer = SnapshotOffer {
        from: "a".into(),
        to: "b".into(),
        last_index: 42,
        last_term: 3,
        total_len: file.image_len,
        crc32c: file.crc32c ^ crc_flip,
    };
    client
        .snapshot_held(offer)
        .await
        .unwrap()
        .into_inner()
        .offset
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
    let mut misnamed = chunked(&data, 4096);
    misnamed[0].crc32c ^= 1;
    let mut short = chunked(&data, 4096);
    short.pop();
    if let Some(last) = short.last_mut() {
        last.done = true;
    }
    let mut wrong_head = chunked(&data, 4096);
    wrong_head[0].last_index = 43;
    let mut elsewhere = chunked(&data, 4096);
    elsewhere[0].to = "c".into();
    use tonic::Code::{DataLoss, InvalidArgument};
    for (what, chunks, code) in [
        ("damaged", damaged, DataLoss),
        ("disordered", disordered, InvalidArgument),
        ("truncated", truncated, InvalidArgument),
        ("huge", huge, InvalidArgument),
        ("under another checksum", misnamed, DataLoss),
        ("ended short", short, InvalidArgument),
        (
            "with a head that is not its header's",
            wrong_head,
            InvalidArgument,
        ),
        ("addressed elsewhere", elsewhere, InvalidArgument),
    ] {
        let status = raw_send(&addr, chunks).await.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status}");
        // Only a send that stopped early leaves anything for the next.
        let kept = held(&addr, &data, 0).await;
        assert_eq!(kept, if what == "truncated" { 8192 } else { 0 }, "{what}");
    }
    assert!(
        inbox.try_recv().is_err(),
        "a refused image reached the node"
    );
    // The same image, whole, is taken; so is an empty one.
    for data in [data, Vec::new()] {
        raw_send(&addr, chunked(&data, 4096)).await.unwrap();
        let got = next(&mut inbox).await;
        match got.msg.body {
            MessageBody::InstallSnapshot { data: got, .. } => assert!(got == data),
            other => panic!("unexpected {other:?}"),
        }
    }
    let _ = stop.send(());
    server.await.unwrap();
}

/// A send cut after some chunks leaves them with the receiver; the next send
/// of the same image reads and sends only the rest, and the image arrives
/// whole. A send that claims to resume at another offset is refused (the
/// part stays), one naming another image is refused and drops it, and so
/// does an offer of another image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_send_resumes_where_it_stopped() {
    let (addr, mut inbox, stop, server) = endpoint().await;
    let data = image(5 * CHUNK_BYTES + 99);
    assert_eq!(
        held(&addr, &data, 0).await,
        0,
        "held before anything was sent"
    );

    // Three chunks, then the stream stops: the receiver keeps them.
    let mut cut = chunked(&data, CHUNK_BYTES);
    cut.truncate(3);
    let status = raw_send(&addr, cut)
        .await
        .expect_err("a cut image was taken");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(inbox.try_recv().is_err(), "a cut image reached the node");
    let kept = 3 * CHUNK_BYTES as u64;
    assert_eq!(held(&addr, &data, 0).await, kept);

    // A send claiming another offset is refused; the part stays.
    let config = titanstore_core::types::encode(&ClusterConfig::default()).unwrap();
    let file = SnapshotFile::from_snapshot(Snapshot {
        meta: meta(),
        data: data.clone(),
    })
    .unwrap();
    let mut wrong = chunked(&data, CHUNK_BYTES).split_off(4);
    header(&mut wrong[0], &file, &config);
    let status = raw_send(&addr, wrong).await.expect_err("resumed at a gap");
    assert!(status.message().contains("holds no such part"), "{status}");
    assert_eq!(held(&addr, &data, 0).await, kept, "a gap dropped the part");
    // So is one at the right offset naming another image; that drops it.
    let mut other = chunked(&data, CHUNK_BYTES).split_off(3);
    header(&mut other[0], &file, &config);
    other[0].crc32c ^= 1;
    let status = raw_send(&addr, other)
        .await
        .expect_err("another image spliced on");
    assert!(status.message().contains("holds no such part"), "{status}");
    assert_eq!(
        held(&addr, &data, 0).await,
        0,
        "another image left the part"
    );

    // A part is still taken over by a send that starts at 0.
    let mut cut = chunked(&data, CHUNK_BYTES);
    cut.truncate(3);
    raw_send(&addr, cut)
        .await
        .expect_err("a cut image was taken");
    let mut cut = chunked(&data, CHUNK_BYTES);
    cut.truncate(1);
    raw_send(&addr, cut)
        .await
        .expect_err("a cut image was taken");
    assert_eq!(held(&addr, &data, 0).await, CHUNK_BYTES as u64);

    // Cut again; the real sender asks, then sends only what is missing.
    let mut cut = chunked(&data, CHUNK_BYTES);
    cut.truncate(3);
    raw_send(&addr, cut)
        .await
        .expect_err("a cut image was taken");
    let source = Source::new(&data);
    let sender = PeerSender::spawn(addr.clone(), &dialer(&source));
    sender.send(ask_image(), Arc::from("c1"));
    expect_resumed(&mut inbox, &source, &data, kept).await;

    // A part of one image is dropped when another image is offered.
    let mut cut = chunked(&data, CHUNK_BYTES);
    cut.truncate(2);
    raw_send(&addr, cut)
        .await
        .expect_err("a cut image was taken");
    assert_eq!(held(&addr, &data, 1).await, 0, "another image was offered");
    assert_eq!(
        held(&addr, &data, 0).await,
        0,
        "the part outlived the offer"
    );
    drop(sender);
    let _ = stop.send(());
    server.await.unwrap();
}

/// What arrived of a send that broke off is on the receiver's disk: a
/// receiver restarted on the same directory still holds it, the real sender
/// sends only the rest, and the finished image leaves no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_outlives_a_restart_of_the_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let data = image(4 * CHUNK_BYTES + 5);
    let (addr, _inbox, stop, server) = endpoint_in(dir.path().to_path_buf()).await;
    let mut cut = chunked(&data, CHUNK_BYTES);
    cut.truncate(3);
    raw_send(&addr, cut)
        .await
        .expect_err("a cut image was taken");
    let kept = 3 * CHUNK_BYTES as u64;
    assert_eq!(held(&addr, &data, 0).await, kept);
    let _ = stop.send(());
    server.await.unwrap();
    let spooled = dir.path().join("snapshot.recv");
    assert!(spooled.exists(), "nothing on disk after the send broke off");

    let (addr, mut inbox, stop, server) = endpoint_in(dir.path().to_path_buf()).await;
    assert_eq!(held(&addr, &data, 0).await, kept, "lost at restart");
    let source = Source::new(&data);
    let sender = PeerSender::spawn(addr.clone(), &dialer(&source));
    sender.send(ask_image(), Arc::from("c1"));
    expect_resumed(&mut inbox, &source, &data, kept).await;
    assert!(!spooled.exists(), "the finished image left its file");
    drop(sender);
    let _ = stop.send(());
    server.await.unwrap();
}

/// Sends `chunks` on a Snapshot call whose stream then stays open, as a
/// sender that went away without closing it would leave it.
fn send_and_stay(
    addr: &str,
    chunks: Vec<SnapshotChunk>,
) -> tokio::task::JoinHandle<Result<(), tonic::Status>> {
    use futures_util::StreamExt;
    let addr = format!("http://{addr}");
    tokio::spawn(async move {
        let mut client = RaftClient::connect(addr).await.unwrap();
        let chunks = futures_util::stream::iter(chunks).chain(futures_util::stream::pending());
        client.snapshot(chunks).await.map(|_| ())
    })
}

/// Waits until the file at `path` is at least `len` bytes long.
async fn wait_for_len(path: &std::path::Path, len: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = std::fs::metadata(path).map_or(0, |m| m.len());
        if now >= len {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} held {now} bytes, not {len}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A send the receiver never sees end (its sender gave it up and the
/// stream stayed open, or its sender reset the call) does not cost the next
/// send what arrived: the next offer stops a receive still waiting for
/// chunks and is answered with what it wrote, a reset call leaves what
/// arrived held, and the real sender then sends only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_given_up_without_an_end_leaves_what_arrived_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (addr, mut inbox, stop, server) = endpoint_in(dir.path().to_path_buf()).await;
    let data = image(5 * CHUNK_BYTES + 99);
    let file = SnapshotFile::from_snapshot(Snapshot {
        meta: meta(),
        data: data.clone(),
    })
    .unwrap();
    let prefix = titanstore_core::storage::ImagePrefix {
        meta: meta(),
        head: file.head.clone(),
        image_len: file.image_len,
        crc32c: file.crc32c,
    };
    let prefix_len = prefix.to_bytes().len() as u64;
    let spooled = dir.path().join("snapshot.recv");

    // Three chunks on a stream that never ends.
    let mut cut = chunked(&data, CHUNK_BYTES);
    cut.truncate(3);
    let stalled = send_and_stay(&addr, cut);
    let kept = 3 * CHUNK_BYTES as u64;
    wait_for_len(&spooled, prefix_len + kept).await;
    assert_eq!(held(&addr, &data, 0).await, kept, "the offer lost the part");
    let status = tokio::time::timeout(Duration::from_secs(10), stalled)
        .await
        .expect("the stalled receive was not stopped")
        .unwrap()
        .expect_err("a stalled image was taken");
    assert_eq!(status.code(), tonic::Code::Aborted, "{status}");

    // The fourth chunk goes on from there; then its sender resets the call.
    let config = titanstore_core::types::encode(&ClusterConfig::default()).unwrap();
    let mut more = chunked(&data, CHUNK_BYTES).split_off(3);
    more.truncate(1);
    header(&mut more[0], &file, &config);
    let reset = send_and_stay(&addr, more);
    let kept = 4 * CHUNK_BYTES as u64;
    wait_for_len(&spooled, prefix_len + kept).await;
    reset.abort();
    let _ = reset.await;
    assert_eq!(
        held(&addr, &data, 0).await,
        kept,
        "a reset call lost the part"
    );

    let source = Source::new(&data);
    let sender = PeerSender::spawn(addr.clone(), &dialer(&source));
    sender.send(ask_image(), Arc::from("c1"));
    expect_resumed(&mut inbox, &source, &data, kept).await;
    assert!(!spooled.exists(), "the finished image left its file");
    drop(sender);
    let _ = stop.send(());
    server.await.unwrap();
}
