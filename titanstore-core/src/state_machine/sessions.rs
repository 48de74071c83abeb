//! The replicated client-session table behind `REQ` (exactly-once writes).
//!
//! Per client id it keeps the replies of its recent seqs (the last
//! [`REPLY_WINDOW`] seqs below its highest), so a retry of an applied
//! (client, seq), in any order, gets the first reply back. Sessions expire
//! by the clock the proposing leader wrote into the entries (`now_ms`, kept
//! monotonic here), never by a node's own clock: every node expires the same
//! sessions at the same entry. An expired client id stays known as expired
//! for one more ttl (every REQ with it gets `ERR SESSION_EXPIRED`), so a late
//! retry cannot be mistaken for the first write of a new session. It lives
//! in the state machine and its images.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::types::LogIndex;

/// Replies kept per client: seqs more than this below its highest are forgotten.
pub const REPLY_WINDOW: u64 = 1024;

/// The first reply a (client, seq) got, as saved for its retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SavedReply {
    /// `OK` (SET, DELETE).
    Ok,
    /// `OK <rev>` (CAS, CAD).
    Rev(LogIndex),
    /// `ERR CONFLICT <current_rev>`.
    Conflict(LogIndex),
}

/// What the table says about a (client, seq) being applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Not applied yet: run it, then [`Sessions::record`] its reply.
    Fresh,
    /// Applied before: this was its reply.
    Duplicate(SavedReply),
    /// The session expired or the seq is older than the kept replies.
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_ms: u64,
    max_seq: u64,
    replies: BTreeMap<u64, SavedReply>,
}

/// All sessions. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    clients: BTreeMap<Vec<u8>, Session>,
    /// (last_ms, client): the expiry order. Derived from `clients`.
    by_touch: BTreeSet<(u64, Vec<u8>)>,
    /// Expired client ids and when they expired.
    expired: BTreeMap<Vec<u8>, u64>,
    /// (expired at, client): when to forget them. Derived from `expired`.
    expired_by_time: BTreeSet<(u64, Vec<u8>)>,
    /// Highest leader clock seen in an entry.
    now_ms: u64,
}

/// The encoded form (the expiry index is rebuilt on decode).
#[derive(Serialize, Deserialize)]
pub(super) struct SessionsImage {
    now_ms: u64,
    clients: Vec<(serde_bytes::ByteBuf, Session)>,
    expired: Vec<(serde_bytes::ByteBuf, u64)>,
}

impl Sessions {
    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Advances the clock to the entry's, expires idle sessions, and says
    /// whether (client, seq) may run.
    pub fn admit(&mut self, client: &[u8], seq: u64, now_ms: u64, ttl_ms: u64) -> Admission {
        self.now_ms = self.now_ms.max(now_ms);
        let cutoff = self.now_ms.saturating_sub(ttl_ms);
        while let Some((at, _)) = self.expired_by_time.first()
            && *at < cutoff
        {
            if let Some((_, id)) = self.expired_by_time.pop_first() {
                self.expired.remove(&id);
            }
        }
        while let Some((last, _)) = self.by_touch.first()
            && *last < cutoff
        {
            if let Some((_, id)) = self.by_touch.pop_first() {
                self.clients.remove(&id);
                self.expired.insert(id.clone(), self.now_ms);
                self.expired_by_time.insert((self.now_ms, id));
            }
        }
        if self.expired.contains_key(client) {
            return Admission::Expired;
        }
        match self.clients.get(client) {
            // A new client: only its first seqs may open a session (in any
            // order, for pipelining).
            None if seq == 0 || seq > REPLY_WINDOW => Admission::Expired,
            None => Admission::Fresh,
            Some(session) => match session.replies.get(&seq) {
                Some(reply) => Admission::Duplicate(*reply),
                None if seq + REPLY_WINDOW <= session.max_seq => Admission::Expired,
                None => Admission::Fresh,
            },
        }
    }

    /// Saves the reply of a fresh (client, seq) that was just applied.
    pub fn record(&mut self, client: &[u8], seq: u64, reply: SavedReply) {
        let now = self.now_ms;
        let session = self.clients.entry(client.to_vec()).or_default();
        self.by_touch.remove(&(session.last_ms, client.to_vec()));
        session.last_ms = now;
        self.by_touch.insert((now, client.to_vec()));
        session.replies.insert(seq, reply);
        session.max_seq = session.max_seq.max(seq);
        let floor = session.max_seq.saturating_sub(REPLY_WINDOW);
        while let Some((&oldest, _)) = session.replies.first_key_value()
            && oldest <= floor
        {
            session.replies.remove(&oldest);
        }
    }

    pub(super) fn to_image(&self) -> SessionsImage {
        SessionsImage {
            now_ms: self.now_ms,
            clients: self
                .clients
                .iter()
                .map(|(id, s)| (serde_bytes::ByteBuf::from(id.clone()), s.clone()))
                .collect(),
            expired: self
                .expired
                .iter()
                .map(|(id, at)| (serde_bytes::ByteBuf::from(id.clone()), *at))
                .collect(),
        }
    }

    pub(super) fn from_image(image: SessionsImage) -> Sessions {
        let mut sessions = Sessions {
            now_ms: image.now_ms,
            ..Sessions::default()
        };
        for (id, session) in image.clients {
            let id = id.into_vec();
            sessions.by_touch.insert((session.last_ms, id.clone()));
            sessions.clients.insert(id, session);
        }
        for (id, at) in image.expired {
            let id = id.into_vec();
            sessions.expired_by_time.insert((at, id.clone()));
            sessions.expired.insert(id, at);
        }
        sessions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_get_the_first_reply_in_any_order() {
        let mut s = Sessions::default();
        assert_eq!(s.admit(b"c", 2, 10, 1000), Admission::Fresh);
        s.record(b"c", 2, SavedReply::Rev(7));
        assert_eq!(s.admit(b"c", 1, 11, 1000), Admission::Fresh);
        s.record(b"c", 1, SavedReply::Ok);
        assert_eq!(
            s.admit(b"c", 2, 12, 1000),
            Admission::Duplicate(SavedReply::Rev(7))
        );
        assert_eq!(
            s.admit(b"c", 1, 12, 1000),
            Admission::Duplicate(SavedReply::Ok)
        );
        assert_eq!(s.admit(b"c", 3, 12, 1000), Admission::Fresh);
    }

    #[test]
    fn old_seqs_and_idle_sessions_expire() {
        let mut s = Sessions::default();
        for seq in 1..=REPLY_WINDOW + 5 {
            assert_eq!(s.admit(b"c", seq, 1, 1000), Admission::Fresh);
            s.record(b"c", seq, SavedReply::Ok);
        }
        assert_eq!(s.admit(b"c", 5, 1, 1000), Admission::Expired);
        assert_eq!(
            s.admit(b"c", 6, 1, 1000),
            Admission::Duplicate(SavedReply::Ok)
        );
        // An unknown client may only start with its first seqs.
        assert_eq!(
            s.admit(b"new", REPLY_WINDOW + 1, 1, 1000),
            Admission::Expired
        );
        assert_eq!(s.admit(b"new", 0, 1, 1000), Admission::Expired);
        // Idle past the ttl (by the entries' clock): forgotten.
        assert_eq!(s.admit(b"other", 1, 2000, 1000), Admission::Fresh);
        assert!(s.is_empty(), "c expired");
        assert_eq!(
            s.admit(b"c", REPLY_WINDOW + 5, 2000, 1000),
            Admission::Expired
        );
        // The clock never goes back: an entry from a lagging leader clock
        // does not revive anything.
        assert_eq!(s.admit(b"c", REPLY_WINDOW + 5, 5, 1000), Admission::Expired);
        // Even its first seqs: the id stays expired for another ttl ...
        assert_eq!(s.admit(b"c", 1, 2900, 1000), Admission::Expired);
        assert_eq!(Sessions::from_image(s.to_image()), s);
        // ... and is then forgotten.
        assert_eq!(s.admit(b"c", 1, 3100, 1000), Admission::Fresh);
    }

    #[test]
    fn image_round_trip_rebuilds_the_expiry_order() {
        let mut s = Sessions::default();
        s.admit(b"a", 1, 5, 100);
        s.record(b"a", 1, SavedReply::Conflict(3));
        s.admit(b"b", 1, 50, 100);
        s.record(b"b", 1, SavedReply::Ok);
        let back = Sessions::from_image(s.to_image());
        assert_eq!(back, s);
    }
}
