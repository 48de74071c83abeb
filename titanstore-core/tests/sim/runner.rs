//! Runs many seeds and prints how to replay a failing one.

use super::{Sim, SimOptions, Stats};

/// Runs `count` seeds from `base` (or just `RAFT_SIM_SEED`), panicking with
/// a replay hint on the first failure.
pub fn run_seeds(name: &str, base: u64, count: u64, opts: impl Fn(u64) -> SimOptions) {
    let seeds: Vec<u64> = match std::env::var("RAFT_SIM_SEED") {
        Ok(s) => vec![s.trim().parse().expect("RAFT_SIM_SEED must be a u64")],
        Err(_) => {
            let count = std::env::var("RAFT_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(count);
            (base..base + count).collect()
        }
    };
    let mut total = Stats::default();
    let mut small_caches = 0;
    for seed in seeds {
        let o = opts(seed);
        let result = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(seed, o.clone())?;
            sim.run().map(|()| sim.stats.clone())
        });
        let hint = format!(
            "replay: RAFT_SIM_SEED={seed} cargo test -p titanstore-core --test raft_sim {name}"
        );
        match result {
            Ok(Ok(stats)) => {
                total.delivered += stats.delivered;
                total.proposals += stats.proposals;
                total.reads_ok += stats.reads_ok;
                total.reads_failed += stats.reads_failed;
                total.crashes += stats.crashes;
                total.snapshots_sent += stats.snapshots_sent;
                total.fetches += stats.fetches;
                small_caches += u64::from(o.log_cache_bytes < 1000);
                total.max_commit = total.max_commit.max(stats.max_commit);
            }
            Ok(Err(e)) => panic!("seed {seed} failed: {e}\n{hint}"),
            Err(_) => panic!("seed {seed} panicked\n{hint}"),
        }
    }
    eprintln!("{name}: {total:?}");
    assert!(
        small_caches < 10 || total.fetches > 0,
        "{small_caches} seeds kept few entries in memory, yet none was ever read back"
    );
}
