//! TitanStore core: everything a node is.
//!
//! Layout:
//! - [`types`]: entries, commands, hard state, configuration (shared data).
//! - [`raft`]: the pure Raft state machine (messages and ticks in, work out).
//! - `storage`: file layer, WAL, snapshots (durable state on disk).
//! - `state_machine`: the key-value map the log is applied to.
//! - `transport`, `protocol`, `server`, `node`, `cli`: the runtime around them.
pub mod raft;
pub mod types;
