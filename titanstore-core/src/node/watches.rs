//! [`WatchHub`]: the node's watches, served from its own applied state.
//!
//! It keeps a bounded history of the changes this node applied (the same on
//! every node: they come from the committed log) and the registered
//! watchers. A watcher that starts in the past catches up from the history a
//! bounded number of entries per tick, then goes live and gets each change
//! as it is applied; an idle one gets `PROGRESS <applied>` every
//! `progress_ticks`. History older than the oldest change held is
//! `ERR COMPACTED <oldest>`. Live watchers are indexed by prefix, so an
//! applied change costs one map lookup per prefix of its key, not one per
//! watcher, and an idle watcher costs nothing between progress ticks.
//!
//! Sans-IO like the replica: it emits [`Effect::Watch`]; the runtime owns the
//! per-watcher buffer (bounded; a full one ends the stream with
//! `ERR WATCH_OVERFLOW` and cancels the watcher here).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::replica::{Effect, Token};
use crate::protocol::{Reply, Watch, WatchEnd, WatchEvent};
use crate::state_machine::Change;
use crate::types::LogIndex;

/// Tunables of watches and sessions (times in ticks unless named).
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Idle sessions of exactly-once writes expire after this long (leader clock).
    pub session_ttl_ms: u64,
    /// Changes kept for watches that start in the past.
    pub watch_history: usize,
    /// At most this many bytes of keys and values among them (the newest
    /// change is always kept).
    pub watch_history_bytes: u64,
    /// An idle watch gets `PROGRESS` this often.
    pub watch_progress_ticks: u64,
    /// History entries a catching-up watcher reads per tick.
    pub watch_catch_up_per_tick: usize,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            session_ttl_ms: 10 * 60 * 1000,
            watch_history: 100_000,
            watch_history_bytes: 8 << 20,
            watch_progress_ticks: 100,
            watch_catch_up_per_tick: 2048,
        }
    }
}

struct Watcher {
    prefix: Vec<u8>,
    /// First revision the watcher wants.
    from: LogIndex,
    /// While catching up: the next revision to read from the history.
    cursor: Option<LogIndex>,
    /// Something was sent since the last progress round.
    busy: bool,
}

/// See the module docs.
pub struct WatchHub {
    watchers: BTreeMap<Token, Watcher>,
    /// Live watchers by prefix.
    live: BTreeMap<Vec<u8>, BTreeSet<Token>>,
    /// Applied changes in revision order.
    history: VecDeque<(LogIndex, Change)>,
    /// Every change with a revision >= this is in `history`.
    oldest: LogIndex,
    max_history: usize,
    /// Bytes of keys and values in `history`, and their bound.
    history_bytes: u64,
    max_history_bytes: u64,
    progress_ticks: u64,
    catch_up: usize,
    ticks: u64,
}

impl WatchHub {
    /// A hub for a state machine at `applied` (nothing older is known).
    pub fn new(config: &ApiConfig, applied: LogIndex) -> WatchHub {
        WatchHub {
            watchers: BTreeMap::new(),
            live: BTreeMap::new(),
            history: VecDeque::new(),
            oldest: applied + 1,
            max_history: config.watch_history.max(1),
            history_bytes: 0,
            max_history_bytes: config.watch_history_bytes,
            progress_ticks: config.watch_progress_ticks.max(1),
            catch_up: config.watch_catch_up_per_tick.max(1),
            ticks: 0,
        }
    }

    /// Number of registered watchers.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// The oldest revision a watch may start at.
    pub fn oldest(&self) -> LogIndex {
        self.oldest
    }

    /// Registers a watch. Returns the reply (`WATCHING <r>` or
    /// `ERR COMPACTED`) and the first events, which must follow the reply.
    pub fn start(&mut self, token: Token, watch: Watch, applied: LogIndex) -> (Reply, Vec<Effect>) {
        let from = match watch.from_rev {
            0 => applied + 1,
            from if from < self.oldest => return (Reply::Compacted(self.oldest), Vec::new()),
            from => from,
        };
        let watcher = Watcher {
            prefix: watch.prefix.unwrap_or_default(),
            from,
            cursor: (from <= applied).then_some(from),
            busy: false,
        };
        let catching_up = watcher.cursor.is_some();
        if !catching_up {
            self.live
                .entry(watcher.prefix.clone())
                .or_default()
                .insert(token);
        }
        self.watchers.insert(token, watcher);
        let mut events = Vec::new();
        if catching_up {
            self.pump(token, &mut events);
        }
        (Reply::Watching(from), events)
    }

    /// A watcher went away (client closed, buffer overflowed).
    pub fn cancel(&mut self, token: Token) {
        if let Some(w) = self.watchers.remove(&token)
            && w.cursor.is_none()
            && let Some(set) = self.live.get_mut(&w.prefix)
        {
            set.remove(&token);
            if set.is_empty() {
                self.live.remove(&w.prefix);
            }
        }
    }

    /// An entry at `rev` changed a key: keep it and tell live watchers.
    pub fn record(&mut self, rev: LogIndex, change: Change, out: &mut Vec<Effect>) {
        if !self.live.is_empty() {
            for len in 0..=change.key.len() {
                let Some(tokens) = self.live.get(&change.key[..len]) else {
                    continue;
                };
                for &token in tokens {
                    if let Some(w) = self.watchers.get_mut(&token)
                        && rev >= w.from
                    {
                        w.busy = true;
                        out.push(Effect::Watch {
                            token,
                            event: WatchEvent::Change {
                                rev,
                                key: change.key.clone(),
                                value: change.value.clone(),
                            },
                        });
                    }
                }
            }
        }
        self.history_bytes += change_bytes(&change);
        self.history.push_back((rev, change));
        while self.history.len() > self.max_history
            || (self.history_bytes > self.max_history_bytes && self.history.len() > 1)
        {
            if let Some((old, change)) = self.history.pop_front() {
                self.history_bytes -= change_bytes(&change);
                self.oldest = old + 1;
            }
        }
    }

    /// The state machine jumped to a snapshot at `applied`: the changes in
    /// between are unknown here, so every watch that needed them ends.
    pub fn reset(&mut self, applied: LogIndex, out: &mut Vec<Effect>) {
        self.history.clear();
        self.history_bytes = 0;
        self.oldest = applied + 1;
        let ended: Vec<Token> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.from <= applied)
            .map(|(t, _)| *t)
            .collect();
        for token in ended {
            self.end(token, WatchEnd::Compacted(self.oldest), out);
        }
    }

    /// One tick: catching-up watchers read on; idle ones get progress.
    pub fn tick(&mut self, applied: LogIndex, out: &mut Vec<Effect>) {
        self.ticks += 1;
        let catching: Vec<Token> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.cursor.is_some())
            .map(|(t, _)| *t)
            .collect();
        for token in catching {
            self.pump(token, out);
        }
        if self.ticks.is_multiple_of(self.progress_ticks) {
            for (&token, w) in self.watchers.iter_mut() {
                if w.cursor.is_none() && !std::mem::take(&mut w.busy) {
                    let rev = applied.max(w.from.saturating_sub(1));
                    out.push(Effect::Watch {
                        token,
                        event: WatchEvent::Progress(rev),
                    });
                }
            }
        }
    }

    /// The node is stopping: every stream ends.
    pub fn shutdown(&mut self, out: &mut Vec<Effect>) {
        let tokens: Vec<Token> = self.watchers.keys().copied().collect();
        for token in tokens {
            self.end(
                token,
                WatchEnd::Stopped("node is shutting down".into()),
                out,
            );
        }
    }

    fn end(&mut self, token: Token, why: WatchEnd, out: &mut Vec<Effect>) {
        self.cancel(token);
        out.push(Effect::Watch {
            token,
            event: WatchEvent::End(why),
        });
    }

    /// Sends a catching-up watcher its next history entries; it goes live
    /// once it reaches the end.
    fn pump(&mut self, token: Token, out: &mut Vec<Effect>) {
        let Some(w) = self.watchers.get_mut(&token) else {
            return;
        };
        let Some(cursor) = w.cursor else {
            return;
        };
        if cursor < self.oldest {
            let oldest = self.oldest;
            self.end(token, WatchEnd::Compacted(oldest), out);
            return;
        }
        let start = self.history.partition_point(|(rev, _)| *rev < cursor);
        let mut next = cursor;
        for (rev, change) in self.history.range(start..).take(self.catch_up) {
            next = rev + 1;
            if change.key.starts_with(&w.prefix) {
                w.busy = true;
                out.push(Effect::Watch {
                    token,
                    event: WatchEvent::Change {
                        rev: *rev,
                        key: change.key.clone(),
                        value: change.value.clone(),
                    },
                });
            }
        }
        if start + self.catch_up >= self.history.len() {
            w.cursor = None;
            self.live.entry(w.prefix.clone()).or_default().insert(token);
        } else {
            w.cursor = Some(next);
        }
    }
}

/// Bytes of a change's key and value, as the history counts them.
fn change_bytes(change: &Change) -> u64 {
    (change.key.len() + change.value.as_ref().map_or(0, Vec::len)) as u64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn change(key: &str, value: Option<&str>) -> Change {
        Change {
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    fn events(out: &mut Vec<Effect>) -> Vec<(Token, String)> {
        out.drain(..)
            .filter_map(|e| match e {
                Effect::Watch { token, event } => {
                    let mut line = Vec::new();
                    event.encode(&mut line);
                    Some((token, String::from_utf8(line).unwrap().trim().to_string()))
                }
                _ => None,
            })
            .collect()
    }

    fn watch(from_rev: LogIndex, prefix: Option<&str>) -> Watch {
        Watch {
            from_rev,
            prefix: prefix.map(Into::into),
        }
    }

    #[test]
    fn live_catch_up_compaction_and_progress() {
        let config = ApiConfig {
            watch_history: 3,
            watch_progress_ticks: 2,
            watch_catch_up_per_tick: 1,
            ..ApiConfig::default()
        };
        let mut hub = WatchHub::new(&config, 4);
        let mut out = Vec::new();
        assert_eq!(hub.start(1, watch(0, Some("a")), 4).0, Reply::Watching(5));
        assert_eq!(hub.start(2, watch(3, None), 4).0, Reply::Compacted(5));
        hub.record(5, change("a1", Some("x")), &mut out);
        hub.record(6, change("b1", Some("y")), &mut out);
        hub.record(7, change("a1", None), &mut out);
        assert_eq!(
            events(&mut out),
            vec![(1, "EVENT 5 SET a1 x".into()), (1, "EVENT 7 DEL a1".into())]
        );
        // From the past: one history entry per tick, then live.
        let (reply, mut first) = hub.start(3, watch(6, None), 7);
        assert_eq!(reply, Reply::Watching(6));
        assert_eq!(events(&mut first), vec![(3, "EVENT 6 SET b1 y".into())]);
        hub.tick(7, &mut out);
        assert_eq!(events(&mut out), vec![(3, "EVENT 7 DEL a1".into())]);
        hub.record(8, change("c", Some("z")), &mut out);
        assert_eq!(events(&mut out), vec![(3, "EVENT 8 SET c z".into())]);
        assert_eq!(hub.oldest(), 6, "history keeps 3 changes");
        // Idle watchers get progress; busy ones do not.
        hub.tick(8, &mut out);
        assert_eq!(events(&mut out), vec![]);
        hub.tick(8, &mut out);
        hub.tick(8, &mut out);
        assert_eq!(
            events(&mut out),
            vec![(1, "PROGRESS 8".into()), (3, "PROGRESS 8".into())]
        );
        hub.cancel(1);
        hub.tick(8, &mut out);
        hub.tick(8, &mut out);
        assert_eq!(events(&mut out), vec![(3, "PROGRESS 8".into())]);
        hub.reset(20, &mut out);
        assert_eq!(events(&mut out), vec![(3, "ERR COMPACTED 21".into())]);
        assert!(hub.is_empty());
    }

    #[test]
    fn the_history_is_bounded_by_bytes_too_but_keeps_the_newest_change() {
        let config = ApiConfig {
            watch_history: 100,
            watch_history_bytes: 10,
            ..ApiConfig::default()
        };
        let mut hub = WatchHub::new(&config, 0);
        let mut out = Vec::new();
        hub.record(1, change("k1", Some("abc")), &mut out); // 5 bytes
        hub.record(2, change("k2", Some("abc")), &mut out); // 10 in all
        assert_eq!(hub.oldest(), 1);
        hub.record(3, change("k3", None), &mut out); // 12: the oldest goes
        assert_eq!(hub.oldest(), 2);
        assert_eq!(hub.start(1, watch(1, None), 3).0, Reply::Compacted(2));
        hub.record(
            4,
            change("k4", Some("a value far over the bound")),
            &mut out,
        );
        assert_eq!(hub.oldest(), 4, "only the newest change is left");
        let (reply, mut first) = hub.start(2, watch(4, None), 4);
        assert_eq!(reply, Reply::Watching(4));
        assert_eq!(
            events(&mut first),
            vec![(2, "EVENT 4 SET k4 a value far over the bound".into())]
        );
    }

    #[test]
    fn a_catching_up_watcher_overtaken_by_trimming_is_compacted() {
        let config = ApiConfig {
            watch_history: 2,
            watch_catch_up_per_tick: 1,
            ..ApiConfig::default()
        };
        let mut hub = WatchHub::new(&config, 0);
        let mut out = Vec::new();
        for rev in 1..=2 {
            hub.record(rev, change("k", Some("v")), &mut out);
        }
        let (reply, mut first) = hub.start(9, watch(1, None), 2);
        assert_eq!(reply, Reply::Watching(1));
        assert_eq!(events(&mut first), vec![(9, "EVENT 1 SET k v".into())]);
        hub.record(3, change("k", Some("v")), &mut out);
        hub.record(4, change("k", Some("v")), &mut out);
        hub.tick(4, &mut out);
        assert_eq!(events(&mut out), vec![(9, "ERR COMPACTED 3".into())]);
    }
}
