//! `--join`: a new node on an empty data dir asks a running cluster to add it.
//!
//! First it learns the members (`MEMBER LIST` on any of the given client
//! addresses), so that it can answer the leader before its own log holds a
//! configuration. Then, while the node runs, it sends `MEMBER ADD` for itself
//! through the leader (following redirects): the leader adds it as a learner,
//! waits until it caught up, and promotes it. A refusal that cannot succeed
//! on retry (a duplicate id or address) stops the node with the reason.
//!
//! The node's incarnation (a random number chosen on its empty data dir and
//! kept in `<data dir>/incarnation`) goes with the request: the node votes
//! only as a member of that incarnation, never on the strength of configs
//! from an earlier life of its id that it replays while catching up.

use std::time::{Duration, Instant};

use super::{NodeError, Peer};
use crate::client::{Client, ClientError, ClientOptions};
use crate::protocol::{Member, MemberSpec, Reply, Request};

fn client(addrs: &[String], timeout: Duration) -> Result<Client, NodeError> {
    let options = ClientOptions {
        timeout,
        retry_timeout: Duration::from_secs(5),
        follow_redirects: true,
    };
    Client::new(addrs.to_vec(), options).map_err(|e| NodeError::Join(e.to_string()))
}

/// The cluster's current members, from any reachable address in `addrs`.
pub(super) fn discover(addrs: &[String], me: &str) -> Result<Vec<Peer>, NodeError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no address answered");
    while Instant::now() < deadline {
        let mut c = client(addrs, Duration::from_secs(2))?;
        match c.execute(&Request::Member(Member::List)) {
            Ok(Reply::Members(list)) => {
                let peers: Vec<Peer> = list
                    .iter()
                    .filter_map(|entry| super::replica::parse_member(entry))
                    .filter(|(spec, _)| spec.id != me)
                    .map(|(spec, _)| Peer {
                        raft_addr: spec.raft_addr(),
                        client_addr: spec.client_addr(),
                        id: spec.id,
                    })
                    .collect();
                if !peers.is_empty() {
                    return Ok(peers);
                }
                last = "the cluster listed no members".into();
            }
            Ok(other) => last = format!("unexpected reply {other:?}"),
            Err(err) => last = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(NodeError::Join(format!(
        "cannot learn the members from {}: {last}",
        addrs.join(",")
    )))
}

/// Asks the cluster to add `me` (as a voter unless `learner`); returns once done.
pub(super) fn join(
    addrs: &[String],
    me: &MemberSpec,
    incarnation: u64,
    learner: bool,
    request_timeout: Duration,
) -> Result<(), NodeError> {
    let request = Request::Member(Member::Add {
        member: me.clone(),
        learner,
        incarnation: Some(incarnation),
    });
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        let mut c = client(addrs, request_timeout + Duration::from_secs(2))?;
        match c.execute(&request) {
            Ok(Reply::Ok) => {
                tracing::info!(member = %me, learner, "joined the cluster");
                return Ok(());
            }
            Err(ClientError::Server(reason))
                if reason.starts_with("duplicate") || reason.contains("unknown") =>
            {
                return Err(NodeError::Join(format!(
                    "the cluster refused to add {me}: {reason}"
                )));
            }
            Ok(other) => tracing::warn!(?other, "unexpected reply to MEMBER ADD; retrying"),
            // Still catching up, a change in progress, no leader, a lost
            // reply: ADD of a member that is already in continues where it was.
            Err(err) => tracing::info!(%err, "not a member yet; asking again"),
        }
        if Instant::now() >= deadline {
            return Err(NodeError::Join(format!(
                "{me} was not added within an hour"
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Name of the file holding a joined node's incarnation.
const INCARNATION_FILE: &str = "incarnation";

/// Reads this node's incarnation, or (`create`) chooses and durably stores one.
pub(super) fn incarnation(dir: &std::path::Path, create: bool) -> Result<Option<u64>, NodeError> {
    let path = dir.join(INCARNATION_FILE);
    let io = |e: std::io::Error| NodeError::Join(format!("{}: {e}", path.display()));
    match std::fs::read_to_string(&path) {
        Ok(text) => u64::from_str_radix(text.trim(), 16)
            .map(Some)
            .map_err(|_| NodeError::Join(format!("{} is damaged", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let inc = super::seed_from_clock("incarnation") | 1;
            let tmp = dir.join("incarnation.tmp");
            {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp).map_err(io)?;
                f.write_all(format!("{inc:x}\n").as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
            }
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            Ok(Some(inc))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}
