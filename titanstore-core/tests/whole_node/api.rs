//! Release 2 clients in the whole-node simulation: counter clients that
//! increment one key with GETREV + `REQ ... CAS` retry loops (retrying the
//! same (client, seq) after every lost or unknown reply, on any node), and
//! watchers that follow a prefix and resume on another node after every
//! failure. What they saw is checked against the committed log.

use std::collections::HashMap;

use rand::Rng;
use titanstore_core::node::Token;
use titanstore_core::protocol::{Cas, GetRev, Reply, Req, Request, Watch, WatchEvent};
use titanstore_core::state_machine::StateMachine;

use super::{CLIENT_TIMEOUT, Sim};

pub const COUNTER: &[u8] = b"counter";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CounterState {
    Idle,
    Reading,
    /// A `REQ <id> <seq> CAS counter <expected> <next>` until it is answered.
    Writing {
        expected: u64,
        next: u64,
    },
}

#[derive(Debug)]
pub struct CounterClient {
    id: String,
    seq: u64,
    state: CounterState,
    token: Option<(Token, u64)>,
    pub successes: u64,
    pub retries: u64,
}

/// One change a watcher saw: revision, key, value (None: deleted).
pub type Seen = (u64, Vec<u8>, Option<Vec<u8>>);

#[derive(Debug)]
pub struct SimWatcher {
    pub prefix: Vec<u8>,
    node: Option<usize>,
    token: Option<Token>,
    /// The next revision it needs (it started at 1).
    pub next_rev: u64,
    pub events: Vec<Seen>,
    pub resumes: u64,
    pub compacted: u64,
}

#[derive(Clone, Copy, Debug)]
enum Owner {
    Counter(usize),
    Watch(usize),
}

/// The clients of one run (none by default: the classic runs are unchanged).
#[derive(Debug, Default)]
pub struct ApiClients {
    pub counters: Vec<CounterClient>,
    pub watchers: Vec<SimWatcher>,
    tokens: HashMap<Token, Owner>,
    /// No new increments (in-flight ones still finish).
    pub winding_down: bool,
    pub errors: Vec<String>,
}

impl ApiClients {
    pub fn with(counters: usize, watch_prefixes: &[&str]) -> ApiClients {
        ApiClients {
            counters: (0..counters)
                .map(|c| CounterClient {
                    id: format!("client{c}"),
                    seq: 1,
                    state: CounterState::Idle,
                    token: None,
                    successes: 0,
                    retries: 0,
                })
                .collect(),
            watchers: watch_prefixes
                .iter()
                .map(|p| SimWatcher {
                    prefix: p.as_bytes().to_vec(),
                    node: None,
                    token: None,
                    next_rev: 1,
                    events: Vec::new(),
                    resumes: 0,
                    compacted: 0,
                })
                .collect(),
            ..ApiClients::default()
        }
    }

    pub fn owns(&self, token: Token) -> bool {
        self.tokens.contains_key(&token)
    }

    /// Whether every counter client is idle with nothing in flight.
    pub fn counters_done(&self) -> bool {
        self.counters
            .iter()
            .all(|c| c.state == CounterState::Idle && c.token.is_none())
    }

    pub fn on_crash(&mut self, node: usize) {
        for w in &mut self.watchers {
            if w.node == Some(node) {
                w.token = None;
                w.node = None;
            }
        }
    }

    pub fn on_reply(&mut self, token: Token, reply: Reply) {
        match self.tokens.remove(&token) {
            Some(Owner::Counter(c)) => self.counter_reply(c, token, reply),
            Some(Owner::Watch(w)) => {
                let watcher = &mut self.watchers[w];
                if watcher.token != Some(token) {
                    return;
                }
                match reply {
                    Reply::Watching(rev) if rev == watcher.next_rev => {
                        // Streams keep the token.
                        self.tokens.insert(token, Owner::Watch(w));
                    }
                    Reply::Watching(rev) => self.errors.push(format!(
                        "WATCH {} answered WATCHING {rev}",
                        watcher.next_rev
                    )),
                    Reply::Compacted(_) => {
                        watcher.compacted += 1;
                        watcher.token = None;
                    }
                    _ => watcher.token = None,
                }
            }
            None => {}
        }
    }

    pub fn on_watch_event(&mut self, token: Token, event: WatchEvent) {
        let Some(&Owner::Watch(w)) = self.tokens.get(&token) else {
            return;
        };
        let watcher = &mut self.watchers[w];
        match event {
            WatchEvent::Change { rev, key, value } => {
                if rev < watcher.next_rev {
                    self.errors.push(format!(
                        "watcher {w} got revision {rev} again (next was {})",
                        watcher.next_rev
                    ));
                }
                if !key.starts_with(&watcher.prefix) {
                    self.errors
                        .push(format!("watcher {w} got a change outside its prefix"));
                }
                watcher.next_rev = rev + 1;
                watcher.events.push((rev, key, value));
            }
            WatchEvent::Progress(rev) => watcher.next_rev = watcher.next_rev.max(rev + 1),
            WatchEvent::End(_) => {
                self.tokens.remove(&token);
                watcher.token = None;
            }
        }
    }

    fn counter_reply(&mut self, c: usize, token: Token, reply: Reply) {
        let client = &mut self.counters[c];
        if client.token.map(|(t, _)| t) != Some(token) {
            return;
        }
        client.token = None;
        match (client.state, reply) {
            (CounterState::Reading, Reply::ValueRev(rev, value)) => {
                let n: u64 = String::from_utf8_lossy(&value).parse().unwrap_or(u64::MAX);
                if n == u64::MAX {
                    self.errors.push("counter holds a non-number".into());
                    client.state = CounterState::Idle;
                } else {
                    client.state = CounterState::Writing {
                        expected: rev,
                        next: n + 1,
                    };
                }
            }
            (CounterState::Reading, Reply::NotFound) => {
                client.state = CounterState::Writing {
                    expected: 0,
                    next: 1,
                }
            }
            (CounterState::Reading, _) => client.state = CounterState::Idle,
            (CounterState::Writing { .. }, Reply::OkRev(_)) => {
                client.successes += 1;
                client.seq += 1;
                client.state = CounterState::Idle;
            }
            (CounterState::Writing { .. }, Reply::Conflict(_)) => {
                client.seq += 1;
                client.state = CounterState::Idle;
            }
            (CounterState::Writing { .. }, Reply::SessionExpired) => {
                self.errors
                    .push(format!("{} seq {} expired", client.id, client.seq));
                client.seq += 1;
                client.state = CounterState::Idle;
            }
            // Unknown, redirected, dropped, no leader: the same REQ again.
            (CounterState::Writing { .. }, _) => client.retries += 1,
            (CounterState::Idle, _) => {}
        }
    }
}

impl Sim {
    /// Moves the release 2 clients one tick on.
    pub(super) fn run_api_clients(&mut self) {
        let mut api = std::mem::take(&mut self.api);
        let up: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].up.is_some())
            .collect();
        if !up.is_empty() {
            for c in 0..api.counters.len() {
                self.counter_step(&mut api, c, &up);
            }
            for w in 0..api.watchers.len() {
                self.watcher_step(&mut api, w, &up);
            }
        }
        self.api = api;
    }

    fn counter_step(&mut self, api: &mut ApiClients, c: usize, up: &[usize]) {
        let now = self.now;
        let client = &mut api.counters[c];
        if let Some((token, sent)) = client.token {
            if now.saturating_sub(sent) <= CLIENT_TIMEOUT {
                return;
            }
            // The reply is lost: forget the request (a write is resent as is).
            api.tokens.remove(&token);
            client.token = None;
            if client.state == CounterState::Reading {
                client.state = CounterState::Idle;
            }
            client.retries += u64::from(client.state != CounterState::Idle);
        }
        if !self.rng.random_bool(0.3) {
            return;
        }
        let node = match self.leader() {
            Some(l) if self.rng.random_bool(0.6) => l,
            _ => up[self.rng.random_range(0..up.len())],
        };
        let client = &mut api.counters[c];
        let request = match client.state {
            CounterState::Idle if api.winding_down => return,
            CounterState::Idle => {
                client.state = CounterState::Reading;
                Request::GetRev(GetRev {
                    key: COUNTER.to_vec(),
                })
            }
            CounterState::Reading => return,
            CounterState::Writing { expected, next } => Request::Req(Req {
                client: client.id.clone().into_bytes(),
                seq: client.seq,
                write: Box::new(Request::Cas(Cas {
                    key: COUNTER.to_vec(),
                    expected,
                    value: next.to_string().into_bytes(),
                })),
            }),
        };
        let token = self.next_token;
        self.next_token += 1;
        client.token = Some((token, now));
        api.tokens.insert(token, Owner::Counter(c));
        if let Some(u) = self.nodes[node].up.as_mut() {
            u.replica.request(token, request);
        }
    }

    fn watcher_step(&mut self, api: &mut ApiClients, w: usize, up: &[usize]) {
        let watcher = &mut api.watchers[w];
        if let Some(token) = watcher.token {
            // Sometimes the client moves on by itself (as after a timeout).
            if self.chaos && self.rng.random_range(0..1000) < 3 {
                if let Some(u) = watcher.node.and_then(|n| self.nodes[n].up.as_mut()) {
                    u.replica.cancel_watch(token);
                }
                api.tokens.remove(&token);
                watcher.token = None;
            }
            return;
        }
        if !self.rng.random_bool(0.2) {
            return;
        }
        let node = up[self.rng.random_range(0..up.len())];
        let token = self.next_token;
        self.next_token += 1;
        watcher.token = Some(token);
        watcher.node = Some(node);
        watcher.resumes += 1;
        api.tokens.insert(token, Owner::Watch(w));
        let request = Request::Watch(Watch {
            from_rev: watcher.next_rev,
            prefix: (!watcher.prefix.is_empty()).then(|| watcher.prefix.clone()),
        });
        if let Some(u) = self.nodes[node].up.as_mut() {
            u.replica.request(token, request);
        }
    }

    /// Every change the committed log made, replayed on a fresh state
    /// machine (the log must be complete: runs without snapshots).
    pub fn committed_changes(&self) -> Result<Vec<Seen>, String> {
        let mut sm = StateMachine::new();
        let mut changes = Vec::new();
        for (&index, entry) in &self.committed {
            if index != sm.applied_index() + 1 {
                return Err(format!("the committed log has a gap before {index}"));
            }
            if let Some(change) = sm.apply_entry(entry).and_then(|a| a.change) {
                changes.push((index, change.key, change.value));
            }
        }
        Ok(changes)
    }
}
