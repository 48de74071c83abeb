//! Placeholder until the Raft core lands.
mod message;
pub use message::{Message, MessageBody};
