//! TitanStore core: everything a node is.
//!
//! Layout:
//! - [`checker`]: the linearizability checker (Wing & Gong / Lowe) for histories.
//! - [`types`]: entries, commands, hard state, configuration (shared data).
//! - [`raft`]: the pure Raft state machine (messages and ticks in, work out).
//! - [`storage`]: file layer, WAL, snapshots (durable state on disk).
//! - [`state_machine`]: the key-value map the log is applied to.
//! - [`transport`]: gRPC between nodes; [`protocol`]: the client wire format;
//!   [`server`]: the client TCP server; [`node`]: the event loop gluing them;
//!   [`cli`]: the `titanstore-server` command line; [`ctl`]: `titanstore-ctl`;
//!   [`logging`]: log lines written off the node's threads.
pub mod checker;
pub mod cli;
pub mod client;
pub mod ctl;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod raft;
pub mod server;
pub mod state_machine;
pub mod storage;
pub mod transport;
pub mod types;

/// jemalloc for the node: size-class slabs keep a loaded leader's heap as
/// compact as its followers' (glibc's arenas left it about 10% larger), and
/// its background thread hands idle memory back to the system within a
/// second (`.cargo/config.toml` sets the decay).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
