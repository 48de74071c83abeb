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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

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
#[serde(from = "SessionImage", into = "SessionImage")]
struct Session {
    last_ms: u64,
    max_seq: u64,
    /// The replies of seqs `max_seq + 1 - replies.len() ..= max_seq`, oldest
    /// first; always `min(max_seq, REPLY_WINDOW)` slots (one form per
    /// content). A ring, not a map: each REQ write touches one slot.
    replies: VecDeque<Option<SavedReply>>,
}

/// A session as images hold it.
#[derive(Clone, Serialize, Deserialize)]
struct SessionImage {
    last_ms: u64,
    max_seq: u64,
    replies: BTreeMap<u64, SavedReply>,
}

impl From<Session> for SessionImage {
    fn from(session: Session) -> SessionImage {
        let first = session.max_seq + 1 - session.replies.len() as u64;
        SessionImage {
            last_ms: session.last_ms,
            max_seq: session.max_seq,
            replies: (first..)
                .zip(&session.replies)
                .filter_map(|(seq, reply)| reply.map(|r| (seq, r)))
                .collect(),
        }
    }
}

impl From<SessionImage> for Session {
    fn from(image: SessionImage) -> Session {
        let mut session = Session {
            last_ms: image.last_ms,
            ..Session::default()
        };
        session.max_seq = image.max_seq;
        session
            .replies
            .resize(image.max_seq.min(REPLY_WINDOW) as usize, None);
        for (seq, reply) in image.replies {
            session.put(seq, reply);
        }
        session
    }
}

impl Session {
    /// The slot of `seq`, if the window covers it.
    fn slot(&self, seq: u64) -> Option<usize> {
        let back = self.max_seq.checked_sub(seq)?;
        (back < self.replies.len() as u64).then(|| self.replies.len() - 1 - back as usize)
    }

    fn get(&self, seq: u64) -> Option<SavedReply> {
        self.slot(seq).and_then(|i| self.replies[i])
    }

    /// Saves `reply` for `seq`, sliding the window when `seq` is the highest.
    fn put(&mut self, seq: u64, reply: SavedReply) {
        if seq > self.max_seq {
            let ahead = seq - self.max_seq;
            if ahead >= REPLY_WINDOW {
                self.replies.clear();
            } else {
                self.replies.extend((0..ahead).map(|_| None));
            }
            self.max_seq = seq;
            let keep = seq.min(REPLY_WINDOW) as usize;
            if self.replies.len() < keep {
                let missing = keep - self.replies.len();
                for _ in 0..missing {
                    self.replies.push_front(None);
                }
            }
            while self.replies.len() > keep {
                self.replies.pop_front();
            }
        }
        if let Some(i) = self.slot(seq) {
            self.replies[i] = Some(reply);
        }
    }
}

/// All sessions. See the module docs.
///
/// Lookups by client id are hashed (every REQ write does two on every node);
/// nothing depends on the maps' iteration order: expiry follows the ordered
/// indexes and images list the ids sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    clients: HashMap<Vec<u8>, Session>,
    /// (last_ms, client): the expiry order. Derived from `clients`.
    by_touch: BTreeSet<(u64, Vec<u8>)>,
    /// Expired client ids and when they expired.
    expired: HashMap<Vec<u8>, u64>,
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
            Some(session) => match session.get(seq) {
                Some(reply) => Admission::Duplicate(reply),
                None if seq + REPLY_WINDOW <= session.max_seq => Admission::Expired,
                None => Admission::Fresh,
            },
        }
    }

    /// Saves the reply of a fresh (client, seq) that was just applied.
    pub fn record(&mut self, client: &[u8], seq: u64, reply: SavedReply) {
        let now = self.now_ms;
        let session = match self.clients.get_mut(client) {
            Some(session) => {
                // Many writes share a clock millisecond: the expiry index
                // moves only when the session's last touch does.
                if session.last_ms != now {
                    self.by_touch.remove(&(session.last_ms, client.to_vec()));
                    self.by_touch.insert((now, client.to_vec()));
                    session.last_ms = now;
                }
                session
            }
            None => {
                self.by_touch.insert((now, client.to_vec()));
                self.clients.entry(client.to_vec()).or_insert(Session {
                    last_ms: now,
                    ..Session::default()
                })
            }
        };
        session.put(seq, reply);
    }

    pub(super) fn to_image(&self) -> SessionsImage {
        let mut clients: Vec<(serde_bytes::ByteBuf, Session)> = self
            .clients
            .iter()
            .map(|(id, s)| (serde_bytes::ByteBuf::from(id.clone()), s.clone()))
            .collect();
        clients.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut expired: Vec<(serde_bytes::ByteBuf, u64)> = self
            .expired
            .iter()
            .map(|(id, at)| (serde_bytes::ByteBuf::from(id.clone()), *at))
            .collect();
        expired.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        SessionsImage {
            now_ms: self.now_ms,
            clients,
            expired,
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
    #![allow(clippy::unwrap_used)]
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

    /// The reply window against a plain map of every seq ever recorded:
    /// pipelined (out-of-order) seqs, gaps and jumps past the window.
    #[test]
    fn reply_window_matches_a_map_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
        let mut next = move |n: u64| rng.random_range(0..n);
        for _ in 0..200 {
            let mut s = Sessions::default();
            let mut model: BTreeMap<u64, SavedReply> = BTreeMap::new();
            let mut max = 0u64;
            for step in 0..400 {
                let seq = match next(10) {
                    0 => max + 1 + next(3 * REPLY_WINDOW),
                    1..=3 => (max + 1).saturating_sub(next(REPLY_WINDOW + 10)).max(1),
                    _ => max + 1 + next(4),
                };
                let expect = match model.get(&seq) {
                    Some(reply) => Admission::Duplicate(*reply),
                    None if max == 0 && seq > REPLY_WINDOW => Admission::Expired,
                    None if seq + REPLY_WINDOW <= max => Admission::Expired,
                    None => Admission::Fresh,
                };
                let got = s.admit(b"c", seq, 1, 1_000_000);
                let expect = match expect {
                    Admission::Duplicate(_) if seq + REPLY_WINDOW <= max => Admission::Expired,
                    other => other,
                };
                assert_eq!(got, expect, "seq {seq} (max {max}) at step {step}");
                if got == Admission::Fresh {
                    let reply = SavedReply::Rev(seq * 7 + step);
                    s.record(b"c", seq, reply);
                    model.insert(seq, reply);
                    max = max.max(seq);
                }
                if step % 97 == 0 {
                    let back = Sessions::from_image(
                        crate::types::decode(&crate::types::encode(&s.to_image()).unwrap())
                            .unwrap(),
                    );
                    assert_eq!(back, s);
                }
            }
        }
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
