//! Conversions between the core's [`Message`] and the wire's `RaftMessage`.
//! Entry payloads and configurations travel as bincode bytes, never strings.

use titanstore_proto::{self as pb, raft_message::Body};

use crate::raft::{Message, MessageBody};
use crate::types::{self, ClusterConfig, Entry, EntryPayload, SnapshotMeta};

/// A message from the wire that cannot be turned into a core message.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("message without a body")]
    MissingBody,
    #[error("undecodable {what}: {source}")]
    Decode {
        what: &'static str,
        source: bincode::error::DecodeError,
    },
    #[error("unencodable {what}: {source}")]
    Encode {
        what: &'static str,
        source: bincode::error::EncodeError,
    },
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, ConvertError> {
    types::encode(value).map_err(|source| ConvertError::Encode { what, source })
}

fn decode<T: serde::de::DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, ConvertError> {
    types::decode(bytes).map_err(|source| ConvertError::Decode { what, source })
}

fn entry_to_wire(entry: &Entry) -> Result<pb::Entry, ConvertError> {
    Ok(pb::Entry {
        term: entry.term,
        index: entry.index,
        payload: encode("entry payload", &entry.payload)?.into(),
    })
}

fn entry_from_wire(entry: &pb::Entry) -> Result<Entry, ConvertError> {
    let payload: EntryPayload = decode("entry payload", &entry.payload)?;
    Ok(Entry {
        term: entry.term,
        index: entry.index,
        payload: payload.into(),
    })
}

/// A cluster configuration as it travels (bincode).
pub(super) fn config_to_wire(config: &ClusterConfig) -> Result<bytes::Bytes, ConvertError> {
    Ok(encode("cluster config", config)?.into())
}

pub(super) fn config_from_wire(bytes: &[u8]) -> Result<ClusterConfig, ConvertError> {
    decode("cluster config", bytes)
}

/// Core message to wire message.
pub fn to_wire(msg: &Message) -> Result<pb::RaftMessage, ConvertError> {
    let body = match &msg.body {
        MessageBody::RequestVote {
            term,
            last_log_index,
            last_log_term,
            pre_vote,
            transfer,
        } => Body::RequestVote(pb::RequestVote {
            term: *term,
            last_log_index: *last_log_index,
            last_log_term: *last_log_term,
            pre_vote: *pre_vote,
            transfer: *transfer,
        }),
        MessageBody::RequestVoteReply {
            term,
            granted,
            pre_vote,
        } => Body::RequestVoteReply(pb::RequestVoteReply {
            term: *term,
            granted: *granted,
            pre_vote: *pre_vote,
        }),
        MessageBody::AppendEntries {
            term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit,
            read_round,
        } => Body::AppendEntries(pb::AppendEntries {
            term: *term,
            prev_log_index: *prev_log_index,
            prev_log_term: *prev_log_term,
            entries: entries
                .iter()
                .map(entry_to_wire)
                .collect::<Result<_, _>>()?,
            leader_commit: *leader_commit,
            read_round: *read_round,
        }),
        MessageBody::AppendEntriesReply {
            term,
            success,
            match_index,
            conflict_index,
            conflict_term,
            read_round,
            reject_index,
            incarnation,
        } => Body::AppendEntriesReply(pb::AppendEntriesReply {
            term: *term,
            success: *success,
            match_index: *match_index,
            conflict_index: *conflict_index,
            conflict_term: *conflict_term,
            read_round: *read_round,
            reject_index: *reject_index,
            incarnation: *incarnation,
        }),
        MessageBody::InstallSnapshot { term, meta, data } => {
            Body::InstallSnapshot(pb::InstallSnapshot {
                term: *term,
                last_index: meta.last_index,
                last_term: meta.last_term,
                config: config_to_wire(&meta.config)?,
                data: data.clone().into(),
            })
        }
        MessageBody::InstallSnapshotReply {
            term,
            last_index,
            incarnation,
        } => Body::InstallSnapshotReply(pb::InstallSnapshotReply {
            term: *term,
            last_index: *last_index,
            incarnation: *incarnation,
        }),
        MessageBody::ReadIndex {
            term,
            request_id,
            nonce,
        } => Body::ReadIndex(pb::ReadIndex {
            term: *term,
            request_id: *request_id,
            nonce: *nonce,
        }),
        MessageBody::ReadIndexReply {
            term,
            request_id,
            read_index,
            ok,
            nonce,
        } => Body::ReadIndexReply(pb::ReadIndexReply {
            term: *term,
            request_id: *request_id,
            read_index: *read_index,
            ok: *ok,
            nonce: *nonce,
        }),
        MessageBody::TimeoutNow { term } => Body::TimeoutNow(pb::TimeoutNow { term: *term }),
        MessageBody::Hello { fresh, reply } => Body::Hello(pb::Hello {
            fresh: *fresh,
            reply: *reply,
        }),
    };
    Ok(pb::RaftMessage {
        from: msg.from.clone(),
        to: msg.to.clone(),
        cluster_id: String::new(),
        body: Some(body),
    })
}

/// Wire message to core message.
pub fn from_wire(msg: pb::RaftMessage) -> Result<Message, ConvertError> {
    let body = match msg.body.ok_or(ConvertError::MissingBody)? {
        Body::RequestVote(m) => MessageBody::RequestVote {
            term: m.term,
            last_log_index: m.last_log_index,
            last_log_term: m.last_log_term,
            pre_vote: m.pre_vote,
            transfer: m.transfer,
        },
        Body::RequestVoteReply(m) => MessageBody::RequestVoteReply {
            term: m.term,
            granted: m.granted,
            pre_vote: m.pre_vote,
        },
        Body::AppendEntries(m) => MessageBody::AppendEntries {
            term: m.term,
            prev_log_index: m.prev_log_index,
            prev_log_term: m.prev_log_term,
            entries: m
                .entries
                .iter()
                .map(entry_from_wire)
                .collect::<Result<_, _>>()?,
            leader_commit: m.leader_commit,
            read_round: m.read_round,
        },
        Body::AppendEntriesReply(m) => MessageBody::AppendEntriesReply {
            term: m.term,
            success: m.success,
            match_index: m.match_index,
            conflict_index: m.conflict_index,
            conflict_term: m.conflict_term,
            read_round: m.read_round,
            reject_index: m.reject_index,
            incarnation: m.incarnation,
        },
        Body::InstallSnapshot(m) => {
            let config = config_from_wire(&m.config)?;
            MessageBody::InstallSnapshot {
                term: m.term,
                meta: SnapshotMeta {
                    last_index: m.last_index,
                    last_term: m.last_term,
                    config,
                },
                data: m.data.to_vec(),
            }
        }
        Body::InstallSnapshotReply(m) => MessageBody::InstallSnapshotReply {
            term: m.term,
            last_index: m.last_index,
            incarnation: m.incarnation,
        },
        Body::ReadIndex(m) => MessageBody::ReadIndex {
            term: m.term,
            request_id: m.request_id,
            nonce: m.nonce,
        },
        Body::ReadIndexReply(m) => MessageBody::ReadIndexReply {
            term: m.term,
            request_id: m.request_id,
            read_index: m.read_index,
            ok: m.ok,
            nonce: m.nonce,
        },
        Body::TimeoutNow(m) => MessageBody::TimeoutNow { term: m.term },
        Body::Hello(m) => MessageBody::Hello {
            fresh: m.fresh,
            reply: m.reply,
        },
    };
    Ok(Message {
        from: msg.from,
        to: msg.to,
        body,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::Command;

    #[test]
    fn append_entries_with_non_utf8_values_round_trips() {
        let msg = Message {
            from: "node1".into(),
            to: "node2".into(),
            body: MessageBody::AppendEntries {
                term: 3,
                prev_log_index: 7,
                prev_log_term: 2,
                entries: vec![
                    Entry {
                        term: 3,
                        index: 8,
                        payload: EntryPayload::Command(Command::Set {
                            key: b"k\xff".to_vec(),
                            value: b"\xc3\x28 not utf-8".to_vec(),
                        })
                        .into(),
                    },
                    Entry {
                        term: 3,
                        index: 9,
                        payload: EntryPayload::Noop.into(),
                    },
                ],
                leader_commit: 7,
                read_round: 4,
            },
        };
        assert_eq!(from_wire(to_wire(&msg).unwrap()).unwrap(), msg);
    }

    #[test]
    fn garbage_payload_is_an_error_not_a_panic() {
        let wire = pb::RaftMessage {
            from: "a".into(),
            to: "b".into(),
            cluster_id: String::new(),
            body: Some(Body::AppendEntries(pb::AppendEntries {
                entries: vec![pb::Entry {
                    term: 1,
                    index: 1,
                    payload: vec![0xff, 0xff, 0xff].into(),
                }],
                ..Default::default()
            })),
        };
        assert!(from_wire(wire).is_err());
        let empty = pb::RaftMessage::default();
        assert!(matches!(from_wire(empty), Err(ConvertError::MissingBody)));
    }
}
