//! Generated gRPC types and services for TitanStore's inter-node RPC (`raft.proto`).
#![allow(clippy::all, clippy::pedantic)]

tonic::include_proto!("titanstore.raft");
