//! The linearizability checker at chaos-run scale: 1M operations over 100
//! keys from 10 concurrent clients (writes, reads, deletes, some unknown
//! outcomes), a linearizable history by construction. The target is under
//! 10 s with memory bounded by the cache budget. Run with
//! `cargo bench -p titanstore-core --bench checker_scale` (set
//! `TITANSTORE_BENCH_OPS` for another size).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use titanstore_core::checker::{self, Kind, Op, Outcome, Verdict};

const KEYS: usize = 100;
const CLIENTS: usize = 10;

/// Each operation takes effect at a point inside its interval, in the order
/// the points are drawn, so the history is linearizable.
fn history(total: usize, seed: u64) -> Vec<Op> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut value: Vec<Option<Vec<u8>>> = vec![None; KEYS];
    let mut busy_until = [0.0f64; CLIENTS];
    let mut ops = Vec::with_capacity(total);
    let mut t = 0.0f64;
    for n in 0..total {
        t += rng.random_range(0.0001..0.001);
        let client = rng.random_range(0..CLIENTS);
        let call = busy_until[client].max(t - rng.random_range(0.0..0.004));
        let ret = t + rng.random_range(0.0..0.004);
        busy_until[client] = ret;
        let key = rng.random_range(0..KEYS);
        let roll = rng.random::<f64>();
        let (kind, val, outcome) = if roll < 0.5 {
            (Kind::Read, value[key].clone(), Outcome::Ok)
        } else if roll < 0.95 {
            let v = format!("c{client}-{n}").into_bytes();
            value[key] = Some(v.clone());
            let outcome = if rng.random::<f64>() < 0.01 {
                Outcome::Unknown
            } else {
                Outcome::Ok
            };
            (Kind::Write, Some(v), outcome)
        } else {
            value[key] = None;
            (Kind::Write, None, Outcome::Ok)
        };
        let ret = if outcome == Outcome::Unknown {
            f64::INFINITY
        } else {
            ret
        };
        ops.push(Op {
            expected: None,
            kind,
            key: format!("k{key}").into_bytes(),
            value: val,
            call: call.min(t),
            ret,
            outcome,
        });
    }
    ops
}

fn main() {
    let total = std::env::var("TITANSTORE_BENCH_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let ops = history(total, 7);
    let started = Instant::now();
    let reports = checker::check(&ops, Some(started + Duration::from_secs(60)));
    let elapsed = started.elapsed();
    let worst = reports
        .iter()
        .map(|r| r.verdict)
        .find(|v| *v != Verdict::Ok)
        .unwrap_or(Verdict::Ok);
    println!(
        "checker_scale: {total} ops over {KEYS} keys: verdict {} in {:.2} s ({} keys)",
        worst.as_str(),
        elapsed.as_secs_f64(),
        reports.len()
    );
    assert_eq!(worst, Verdict::Ok, "the generated history is linearizable");
}
