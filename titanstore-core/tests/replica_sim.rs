//! The whole-node simulation (see `whole_node/mod.rs`): seeded runs of 3-
//! and 5-node clusters under every fault, and scripted regressions for what
//! reviews found in the code that answers clients.
//!
//! Replay one seed: `NODE_SIM_SEED=<seed> cargo test -p titanstore-core --test replica_sim <test>`;
//! run more: `NODE_SIM_SEEDS=<count>` (per test; CI runs the defaults, 1,200 in all),
//! e.g. `NODE_SIM_SEEDS=50000` in each of the two tests for the long mode.
//! The `sim_lease_reads*` tests run the same faults with lease reads, the
//! sim's skipped ticks kept within the lease's 10% drift bound.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod whole_node;

use titanstore_core::protocol::{Req, Request, Set};
use titanstore_core::raft::{Message, MessageBody, ReadMode, Role};
use whole_node::{OpOutcome, Options, Sim, run_seeds};

#[test]
fn sim_three_nodes() {
    run_seeds("sim_three_nodes", 1, 700, |seed| Options::shape(3, seed));
}

/// Lease reads under every fault; the checker must still find the history
/// linearizable (the sim keeps clock drift within the lease's bound).
#[test]
fn sim_lease_reads() {
    run_seeds("sim_lease_reads", 3_000_001, 300, |seed| Options {
        read_mode: ReadMode::Lease,
        ..Options::shape(3 + 2 * (seed % 2) as usize, seed)
    });
}

/// Lease reads with membership changes and leadership transfers.
#[test]
fn sim_lease_reads_with_membership_changes() {
    run_seeds(
        "sim_lease_reads_with_membership_changes",
        3_100_001,
        100,
        |seed| {
            let nodes = 3 + (seed % 3) as usize;
            Options {
                spares: 7 - nodes,
                membership_pm: 8,
                read_mode: ReadMode::Lease,
                ..Options::shape(nodes, seed)
            }
        },
    );
}

#[test]
fn sim_five_nodes() {
    run_seeds("sim_five_nodes", 1_000_001, 500, |seed| {
        Options::shape(5, seed)
    });
}

/// Makes node `i` campaign until it leads, stepping one tick at a time so
/// that the test can change the network the moment it wins.
fn win(sim: &mut Sim, i: usize) {
    for _ in 0..10 {
        sim.campaign(i);
        if sim.until(12, |s| s.role(i) == Some(Role::Leader)) {
            return;
        }
    }
    panic!("node {i} never won: {:?}", sim.status(i));
}

/// Elects node `i` and lets everyone apply what it commits.
fn elect(sim: &mut Sim, i: usize) {
    assert!(
        sim.until(400, |s| s.nodes.iter().all(|n| n
            .up
            .as_ref()
            .is_none_or(|u| !u.replica.raft_status().bootstrapping))),
        "bootstrap never finished"
    );
    for _ in 0..20 {
        if sim.role(i) == Some(Role::Leader) {
            break;
        }
        sim.campaign(i);
        sim.ticks(10);
    }
    assert_eq!(sim.role(i), Some(Role::Leader), "node {i} did not win");
}

/// Review finding: a new leader proposing at an index answered the write it
/// replaced there `ERR DROPPED`, though that write could still commit (and
/// did). Five nodes A..E (0..4); the indexes are relative to A's log.
#[test]
fn dropped_only_when_another_entry_is_committed_at_the_index() {
    let (a, b, c, d, e) = (0, 1, 2, 3, 4);
    let mut sim = Sim::quiet(7, 5);
    elect(&mut sim, a);
    sim.ticks(20);
    // A appends X, Y, W; only C receives them.
    sim.links(&[(a, c)]);
    let x = sim.write(a, "k0", "x");
    let y = sim.write(a, "k1", "y");
    let w = sim.write(a, "k2", "w");
    sim.ticks(40);
    let w_index = sim.status(a).unwrap().last_index;
    // B wins the next term with D and E; its no-op reaches only A and cuts
    // A's X, Y, W.
    sim.links(&[(b, d), (b, e), (b, a)]);
    win(&mut sim, b);
    assert_eq!(sim.role(b), Some(Role::Leader));
    sim.links(&[(b, a)]);
    sim.ticks(10);
    assert_eq!(sim.status(a).unwrap().last_index, w_index - 2);
    // A wins again with D and E, appends its no-op and a new write W2 at W's index.
    sim.links(&[(a, d), (a, e)]);
    win(&mut sim, a);
    assert_eq!(sim.role(a), Some(Role::Leader));
    sim.links(&[]);
    let w2 = sim.write(a, "k3", "w2");
    sim.ticks(5);
    assert_eq!(
        sim.status(a).unwrap().last_index,
        w_index,
        "W2 sits at W's index"
    );
    assert_ne!(
        sim.reply(w).map(|r| r.starts_with("ERR DROPPED")),
        Some(true),
        "W was told DROPPED while it could still commit"
    );
    // A crashes; C, which still holds X, Y, W, wins with D and E and commits W.
    sim.crash(a, false);
    sim.links(&[(c, d), (c, e)]);
    assert!(
        sim.until(400, |s| {
            s.role(c) == Some(Role::Leader) && s.status(c).unwrap().commit > w_index
        }) || {
            for _ in 0..30 {
                sim.campaign(c);
                sim.ticks(10);
                if sim.status(c).unwrap().commit > w_index {
                    break;
                }
            }
            sim.status(c).unwrap().commit > w_index
        }
    );
    sim.ticks(10);
    assert!(sim.applied("w"), "W was committed by C");
    assert_eq!(sim.outcome(w), OpOutcome::Unknown);
    for h in [x, y, w2] {
        assert_ne!(sim.outcome(h), OpOutcome::Fail, "{:?}", sim.reply(h));
    }
    sim.finish().unwrap();
}

/// Review finding: a node whose data dir was wiped voted as if it
/// remembered, and elected a leader that lacked 50 acknowledged writes.
#[test]
fn a_node_that_lost_its_data_never_votes() {
    let (l, x, y) = (0, 1, 2);
    let mut sim = Sim::quiet(11, 3);
    elect(&mut sim, l);
    sim.crash(y, false);
    let writes: Vec<usize> = (0..50)
        .map(|i| sim.write(l, &format!("k{}", i % 3), &format!("w{i}")))
        .collect();
    assert!(sim.until(300, |s| {
        writes.iter().all(|&h| s.outcome(h) == OpOutcome::Ok)
    }));
    sim.wipe(x);
    sim.crash(l, false);
    sim.start(x).unwrap();
    sim.start(y).unwrap();
    sim.ticks(600);
    assert!(sim.nodes[x].refused.is_some(), "the wiped node took part");
    let why = sim.nodes[x].refused.clone().unwrap();
    assert!(why.contains("Replace a dead node"), "{why}");
    assert_ne!(sim.role(y), Some(Role::Leader), "Y led without the writes");
    sim.start(l).unwrap();
    sim.finish().unwrap();
    for h in writes {
        assert_eq!(sim.outcome(h), OpOutcome::Ok);
    }
}

/// A fresh cluster bootstraps through the gate, and a node that starts late,
/// within the grace period, still joins the bootstrap.
#[test]
fn new_cluster_bootstraps_and_picks_a_cluster_id() {
    let mut sim = Sim::quiet(3, 3);
    sim.crash(2, false);
    sim.ticks(30);
    assert!(
        sim.status(0).unwrap().bootstrapping,
        "voted before node 3 confirmed"
    );
    sim.start(2).unwrap();
    elect(&mut sim, 0);
    sim.ticks(40);
    let line = sim.status_line(1).unwrap();
    assert!(!line.contains("cluster_id=-"), "{line}");
    let ids: Vec<String> = (0..3)
        .map(|i| {
            sim.nodes[i]
                .up
                .as_ref()
                .unwrap()
                .replica
                .kv()
                .cluster_id()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    sim.finish().unwrap();
}

/// Exactly-once sessions expire by the clock the leader writes into the
/// entries: a retry after the ttl gets `ERR SESSION_EXPIRED` (never a second
/// apply), the id stays refused for one more ttl, then starts afresh.
#[test]
fn an_expired_session_refuses_its_retries_then_starts_afresh() {
    let mut sim = Sim::quiet_with(8, 3, |o| o.session_ttl_ms = 3_000);
    elect(&mut sim, 0);
    let req = |client: &str, seq: u64, key: &str| {
        Request::Req(Req {
            client: client.as_bytes().to_vec(),
            seq,
            write: Box::new(Request::Set(Set {
                key: key.as_bytes().to_vec(),
                value: format!("{client}-{seq}").into_bytes(),
            })),
        })
    };
    let ask = |sim: &mut Sim, request: Request| {
        let token = sim.admin(0, request);
        assert!(
            sim.until(200, |s| s.admin_reply(token).is_some()),
            "no reply"
        );
        sim.admin_reply(token).unwrap().to_string()
    };
    assert_eq!(ask(&mut sim, req("c1", 1, "k")), "OK");
    assert_eq!(
        ask(&mut sim, req("c1", 1, "k")),
        "OK",
        "a retry within the ttl"
    );
    // 4 s of the leader's clock later, another client's write expires c1.
    sim.ticks(400);
    assert_eq!(ask(&mut sim, req("c2", 1, "other")), "OK");
    assert_eq!(ask(&mut sim, req("c1", 1, "k")), "ERR SESSION_EXPIRED");
    assert_eq!(ask(&mut sim, req("c1", 2, "k")), "ERR SESSION_EXPIRED");
    let sets_of_c1 = sim.nodes[0]
        .up
        .as_ref()
        .unwrap()
        .replica
        .kv()
        .get(b"k")
        .map(<[u8]>::to_vec);
    assert_eq!(sets_of_c1.as_deref(), Some(&b"c1-1"[..]));
    // Another ttl on, c1 is forgotten (and c2, idle as long, has expired:
    // a new client's write moves the clock): a new session under c1's id.
    sim.ticks(400);
    assert_eq!(ask(&mut sim, req("c3", 1, "other")), "OK");
    assert_eq!(ask(&mut sim, req("c2", 2, "other")), "ERR SESSION_EXPIRED");
    assert_eq!(ask(&mut sim, req("c1", 1, "k")), "OK");
    sim.finish().unwrap();
}

/// A message stamped with another cluster's id is refused (the node stays
/// as it was), the same message with the node's own id (or none) is not.
#[test]
fn messages_from_another_cluster_are_refused() {
    let mut sim = Sim::quiet(4, 3);
    elect(&mut sim, 0);
    sim.ticks(40);
    let ours = sim.nodes[1]
        .up
        .as_ref()
        .unwrap()
        .replica
        .cluster_id()
        .unwrap()
        .to_string();
    let term = sim.status(1).unwrap().term;
    let timeout_now = || Message {
        from: "n1".into(),
        to: "n2".into(),
        body: MessageBody::TimeoutNow { term },
    };
    let up = sim.nodes[1].up.as_mut().unwrap();
    up.replica.step_from("0123456789abcdef", timeout_now());
    assert_eq!(up.replica.foreign_messages(), 1);
    let mut effects = Vec::new();
    up.replica.poll(&mut effects).unwrap();
    assert_eq!(
        up.replica.raft_status().term,
        term,
        "a foreign TimeoutNow was obeyed"
    );
    assert!(effects.is_empty(), "{effects:?}");
    // The same message from its own cluster starts an election at once.
    up.replica.step_from(&ours, timeout_now());
    up.replica.poll(&mut effects).unwrap();
    assert!(
        up.replica.raft_status().term > term,
        "its own cluster's TimeoutNow was refused"
    );
    assert_eq!(up.replica.foreign_messages(), 1);
    sim.finish().unwrap();
}

/// A leader whose disk stops completing writes steps down; another node
/// leads; STATUS says why.
#[test]
fn a_leader_with_a_stalled_disk_steps_down() {
    let mut sim = Sim::quiet(5, 3);
    elect(&mut sim, 0);
    sim.stall(0, 2000);
    let h = sim.write(0, "k0", "during-stall");
    assert!(sim.until(1000, |s| (1..3).any(|i| s.role(i) == Some(Role::Leader))));
    assert_ne!(sim.role(0), Some(Role::Leader));
    let line = sim.status_line(0).unwrap();
    assert!(line.contains("disk=stalled"), "{line}");
    let w = sim.write(sim.leader().unwrap(), "k1", "after");
    assert!(sim.until(200, |s| s.outcome(w) == OpOutcome::Ok));
    let _ = h;
    sim.finish().unwrap();
}

/// A leader whose disk fills up (ENOSPC) steps down and answers writes
/// `ERR NOSPACE`; a healthy node leads and takes writes; once the disk has
/// room the node catches up by itself, and no acknowledged write is lost.
#[test]
fn a_leader_with_a_full_disk_steps_down_and_recovers() {
    let mut sim = Sim::quiet(6, 3);
    elect(&mut sim, 0);
    sim.fill_disk(0);
    let first = sim.write(0, "k0", "into-a-full-disk");
    assert!(sim.until(1000, |s| (1..3).any(|i| s.role(i) == Some(Role::Leader))));
    assert_ne!(sim.role(0), Some(Role::Leader));
    let line = sim.status_line(0).unwrap();
    assert!(line.contains("disk=full"), "{line}");
    let refused = sim.write(0, "k1", "refused");
    assert!(sim.until(10, |s| s.reply(refused).is_some()));
    let reply = sim.reply(refused).unwrap_or_default();
    assert!(reply.starts_with("ERR NOSPACE"), "{reply}");
    let leader = sim.leader().unwrap();
    let w = sim.write(leader, "k2", "while-full");
    assert!(sim.until(200, |s| s.outcome(w) == OpOutcome::Ok));
    // Node 0 keeps its place: it leads again only if elected, and its
    // disk catches up once it has room.
    sim.free_disk(0);
    let after = sim.write(leader, "k3", "after-room");
    assert!(sim.until(200, |s| s.outcome(after) == OpOutcome::Ok));
    let commit = sim.status(leader).unwrap().commit;
    assert!(
        sim.until(1000, |s| s.status(0).is_some_and(|st| st.applied >= commit)),
        "the node never caught up: {:?}",
        sim.status(0)
    );
    let line = sim.status_line(0).unwrap();
    assert!(line.contains("disk=ok"), "{line}");
    let _ = first;
    sim.finish().unwrap();
}

/// Three nodes, node 0 leading, node 2 down while the others wrote and
/// compacted past it: started again, it can catch up only by a snapshot.
fn behind_a_snapshot(seed: u64, tune: impl FnOnce(&mut Options)) -> Sim {
    let mut opts = Options::shape(3, seed);
    opts.snapshot_threshold = 5;
    opts.chaos_ticks = 0;
    tune(&mut opts);
    let mut sim = Sim::new(seed, opts).unwrap();
    sim.set_chaos(false);
    elect(&mut sim, 0);
    sim.crash(2, false);
    for i in 0..40 {
        sim.write(0, "k0", &format!("image{i}"));
        sim.ticks(2);
    }
    sim.ticks(50);
    sim
}

/// A snapshot image damaged in transit is refused, never fatal.
#[test]
fn a_damaged_snapshot_image_is_refused() {
    let mut sim = behind_a_snapshot(9, |opts| opts.corrupt_snapshot_pm = 1000);
    sim.set_chaos(true);
    sim.set_faults_off();
    sim.start(2).unwrap();
    // The leader re-sends on its snapshot retry timer; decoding takes a while.
    let refused = |s: &Sim| {
        s.nodes[2]
            .up
            .as_ref()
            .is_some_and(|u| u.replica.bad_snapshots > 0)
    };
    assert!(sim.until(1_000, refused), "no damaged image was refused");
    assert!(
        sim.nodes[2].up.is_some(),
        "the damaged image stopped the node"
    );
    sim.set_chaos(false);
    sim.finish().unwrap();
}

/// A received image is decoded off the node's loop: while that takes long,
/// the node keeps following its leader (no election), neither a re-sent copy
/// nor a newer image is decoded beside it, and once decoded the node catches up.
#[test]
fn a_slow_snapshot_decode_neither_stalls_nor_repeats() {
    let mut sim = behind_a_snapshot(11, |_| {});
    let term = sim.status(0).unwrap().term;
    sim.hold_decodes = true;
    sim.start(2).unwrap();
    assert!(
        sim.until(200, |s| s.decodes_waiting(2) > 0),
        "no snapshot reached the lagging node"
    );
    // Far longer than the leader's snapshot retry and any election timeout,
    // with writes, so that the leader's newer snapshots are offered too.
    for i in 0..60 {
        sim.write(0, "k1", &format!("later{i}"));
        sim.ticks(100);
    }
    assert_eq!(
        sim.decodes_waiting(2),
        1,
        "a re-sent or newer image was queued beside the first"
    );
    let status = sim.status(0).unwrap();
    assert_eq!(
        (status.role, status.term),
        (Role::Leader, term),
        "leadership moved while an image was being decoded"
    );
    sim.hold_decodes = false;
    let commit = sim.status(0).unwrap().commit;
    assert!(
        sim.until(500, |s| s.status(2).is_some_and(|st| st.applied >= commit)),
        "the node never caught up: {:?}",
        sim.status(2)
    );
    sim.finish().unwrap();
}

/// Big values bound the log by bytes: with few entries but many bytes of
/// values since the last snapshot, a new one is taken (and not without the
/// byte bound).
#[test]
fn big_values_trigger_snapshots_by_bytes() {
    for (bound, expect_snapshot) in [(4_000, true), (u64::MAX, false)] {
        let mut opts = Options::shape(3, 13);
        opts.snapshot_threshold = 1_000;
        opts.snapshot_log_bytes = bound;
        opts.chaos_ticks = 0;
        let mut sim = Sim::new(13, opts).unwrap();
        sim.set_chaos(false);
        elect(&mut sim, 0);
        let big = "v".repeat(1_000);
        for i in 0..12 {
            let w = sim.write(0, &format!("k{}", i % 3), &big);
            assert!(sim.until(200, |s| s.outcome(w) == OpOutcome::Ok));
        }
        let snapshotted = sim.until(200, |s| {
            (0..3).all(|n| s.status(n).is_some_and(|st| st.snapshot_index > 0))
        });
        assert_eq!(snapshotted, expect_snapshot, "byte bound {bound}");
        sim.finish().unwrap();
    }
}

#[test]
fn sim_membership_changes() {
    run_seeds("sim_membership_changes", 2_000_001, 300, |seed| {
        let nodes = 3 + (seed % 3) as usize;
        Options {
            spares: 7 - nodes,
            membership_pm: 8,
            ..Options::shape(nodes, seed)
        }
    });
}

/// The classic single-server membership bug (Ongaro, raft-dev 2015): a new
/// leader that proposes a change before committing an entry of its own term
/// can have a committed change overwritten by a leader of the other config.
/// Four voters a..d and a learner e. a promotes e (only a and e get it);
/// b wins term 2 with c and d and at once proposes to remove a; a then wins
/// with d and e under its own config. The rule "commit in your term first"
/// refuses b's change.
#[test]
fn a_new_leader_changes_membership_only_after_committing_in_its_term() {
    use titanstore_core::protocol::{Member, MemberSpec, Request};
    let (a, b, c, d, e) = (0, 1, 2, 3, 4);
    let mut opts = Options::shape(4, 21);
    opts.spares = 1;
    opts.chaos_ticks = 0;
    let mut sim = Sim::new(21, opts).unwrap();
    sim.set_chaos(false);
    elect(&mut sim, a);
    sim.ticks(20);
    sim.make_joining(e);
    let add = sim.admin(
        a,
        Request::Member(Member::Add {
            member: MemberSpec::parse("n5:n5:1:2").unwrap(),
            learner: true,
            incarnation: sim.nodes[e].incarnation,
        }),
    );
    assert!(sim.until(300, |s| s.admin_reply(add).is_some()));
    assert_eq!(sim.admin_reply(add), Some("OK"));
    sim.ticks(20);
    sim.links(&[(a, e)]);
    let promote = sim.admin(a, Request::Member(Member::Promote { id: "n5".into() }));
    sim.ticks(10);
    sim.links(&[(b, c), (b, d)]);
    win(&mut sim, b);
    // b's no-op reaches c only: it is not committed when b proposes.
    sim.links(&[(b, c)]);
    let remove = sim.admin(b, Request::Member(Member::Remove { id: "n1".into() }));
    sim.ticks(2);
    let reply = sim.admin_reply(remove).map(str::to_string);
    assert!(
        reply
            .as_deref()
            .is_some_and(|r| r.contains("has not committed an entry of its term")),
        "b changed membership before committing in its term: {reply:?}"
    );
    sim.ticks(20);
    sim.links(&[(a, d), (a, e)]);
    for _ in 0..5 {
        sim.campaign(a);
        sim.ticks(15);
    }
    let _ = promote;
    sim.finish().unwrap();
}

/// Runs a chaos phase with the release 2 clients, then heals, checks the
/// classic history and lets the in-flight increments finish.
fn run_with_api(seed: u64, opts: Options, api: whole_node::ApiClients) -> Sim {
    let mut sim = Sim::new(seed, opts).unwrap();
    sim.api = api;
    sim.run().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    sim.api.winding_down = true;
    assert!(
        sim.until(3000, |s| s.api.counters_done()),
        "seed {seed}: increments never finished: {:?}",
        sim.api.counters
    );
    assert_eq!(sim.api.errors, Vec::<String>::new(), "seed {seed}");
    sim
}

/// CAS contention with exactly-once retries: clients increment one counter
/// with GETREV then `REQ <id> <seq> CAS`, and resend the same (id, seq) to
/// any node after every lost, unknown or refused answer, under kills, power
/// losses, partitions and snapshots (so sessions travel in images). A retry
/// applied twice would make the counter run ahead of the increments that
/// got `OK`; a lost `OK` would make it lag behind.
#[test]
fn sim_cas_counter_with_exactly_once_retries() {
    let (mut retries, mut total) = (0, 0);
    for seed in 0..8u64 {
        let opts = Options::shape(3, 50_000 + seed);
        let sim = run_with_api(seed, opts, whole_node::ApiClients::with(3, &[]));
        let successes: u64 = sim.api.counters.iter().map(|c| c.successes).sum();
        retries += sim.api.counters.iter().map(|c| c.retries).sum::<u64>();
        total += successes;
        let leader = sim.leader().expect("a leader after healing");
        let kv = sim.nodes[leader].up.as_ref().unwrap().replica.kv();
        let value = kv
            .get(whole_node::COUNTER)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let expected = (successes > 0).then(|| successes.to_string());
        assert_eq!(
            value, expected,
            "seed {seed}: counter vs successful increments"
        );
    }
    assert!(total > 50, "too few increments to mean anything: {total}");
    assert!(retries > 0, "no increment was ever retried");
}

/// Watchers on random nodes follow "" and "k1" from revision 1 and resume
/// on another node (at their last revision + 1) after every kill, power
/// loss, compaction or cancel; what each saw must equal exactly the changes
/// the committed log made to its prefix: no gap, no repeat.
#[test]
fn sim_watchers_resume_without_gap_or_repeat() {
    let mut resumes = 0;
    for seed in 0..6u64 {
        let mut opts = Options::shape(3, 60_000 + seed);
        // The whole log stays, so every node can serve every revision.
        opts.snapshot_threshold = 1_000_000;
        let mut sim = run_with_api(seed, opts, whole_node::ApiClients::with(1, &["", "k1"]));
        let last = sim.committed_changes().unwrap().last().map_or(0, |c| c.0);
        assert!(
            sim.until(3000, |s| s.api.watchers.iter().all(|w| w.next_rev > last)),
            "seed {seed}: watchers never caught up to {last}: {:?}",
            sim.api
                .watchers
                .iter()
                .map(|w| w.next_rev)
                .collect::<Vec<_>>()
        );
        let changes = sim.committed_changes().unwrap();
        for w in &sim.api.watchers {
            let expected: Vec<_> = changes
                .iter()
                .filter(|c| c.1.starts_with(&w.prefix) && c.0 <= last)
                .cloned()
                .collect();
            let seen: Vec<_> = w.events.iter().filter(|e| e.0 <= last).cloned().collect();
            assert_eq!(seen.len(), expected.len(), "seed {seed}");
            assert_eq!(seen, expected, "seed {seed}: prefix {:?}", w.prefix);
            resumes += w.resumes;
        }
        assert_eq!(sim.api.errors, Vec::<String>::new(), "seed {seed}");
    }
    assert!(resumes > 12, "watchers never had to resume: {resumes}");
}
