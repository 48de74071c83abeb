//! Seeded simulation of 3- and 5-node clusters (see `sim/mod.rs`).
//!
//! Replay one seed: `RAFT_SIM_SEED=<seed> cargo test -p titanstore-core --test raft_sim <test>`;
//! run more seeds: `RAFT_SIM_SEEDS=<count>`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;
mod support;

use sim::{SimOptions, run_seeds};
use titanstore_core::raft::ReadMode;

fn opts(nodes: usize, seed: u64) -> SimOptions {
    SimOptions {
        nodes,
        chaos_ticks: 600 + seed % 400,
        liveness_ticks: 600,
        drop_pct: 5,
        dup_pct: 3,
        max_delay: 3,
        // Mostly the production setting; sometimes plain Raft for more
        // contested elections.
        pre_vote: !seed.is_multiple_of(4),
        check_quorum: !seed.is_multiple_of(3),
        crash_pm: 3 + (seed % 5) as u32 * 3,
        persist_pm: 200 + (seed % 7) as u32 * 100,
        read_mode: ReadMode::Index,
        // Half the seeds keep only a few entries in memory: the rest are
        // read back from the disk, at boot and for lagging followers.
        log_cache_bytes: if seed.is_multiple_of(2) {
            300
        } else {
            u64::MAX
        },
    }
}

/// Lease reads (which need check-quorum), pre-vote on or off.
fn lease_opts(nodes: usize, seed: u64) -> SimOptions {
    SimOptions {
        check_quorum: true,
        read_mode: ReadMode::Lease,
        ..opts(nodes, seed)
    }
}

#[test]
fn sim_three_nodes() {
    run_seeds("sim_three_nodes", 1, 600, |seed| opts(3, seed));
}

#[test]
fn sim_five_nodes() {
    run_seeds("sim_five_nodes", 100_001, 400, |seed| opts(5, seed));
}

#[test]
fn sim_lossy_network() {
    run_seeds("sim_lossy_network", 200_001, 100, |seed| SimOptions {
        drop_pct: 25,
        dup_pct: 10,
        max_delay: 8,
        ..opts(3 + 2 * (seed % 2) as usize, seed)
    });
}

#[test]
fn sim_lease_reads() {
    run_seeds("sim_lease_reads", 300_001, 400, |seed| {
        lease_opts(3 + 2 * (seed % 2) as usize, seed)
    });
}

#[test]
fn sim_lease_reads_lossy() {
    run_seeds("sim_lease_reads_lossy", 400_001, 100, |seed| SimOptions {
        drop_pct: 25,
        dup_pct: 10,
        max_delay: 8,
        ..lease_opts(3 + 2 * (seed % 2) as usize, seed)
    });
}
