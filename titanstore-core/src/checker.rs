//! Wing & Gong / Lowe linearizability checking, as porcupine does it, for a
//! key-value store whose keys are independent registers with
//! compare-and-set (CAS by revision maps to CAS by value when every write of
//! a key writes a value of its own, as chaos clients do).
//!
//! Pure: no Python, no I/O. The history is split by key (linearizability is
//! compositional), each key's operations become call/return events on a
//! doubly linked list, and a depth-first search linearizes calls one at a time,
//! backtracking when it meets the return of an operation it could not place.
//! States already seen, (set of linearized ops, register value), are cached so
//! the search never repeats itself. A deadline turns a pathological history
//! into [`Verdict::Unknown`] instead of a hang.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `value` is what the read returned (None: missing).
    Read,
    /// `value` is what was written (None: a delete).
    Write,
    /// A compare-and-set that swapped: the register held `expected`, and
    /// became `value` (None: a compare-and-delete). With an unknown outcome:
    /// it swapped at some point when the register held `expected`, or never.
    Cas,
    /// A compare-and-set answered CONFLICT: the register did not hold
    /// `expected`, and kept its value.
    CasConflict,
}

/// How an operation ended, from the client's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Completed: it took effect between its call and its return.
    Ok,
    /// Definitely not applied: dropped from the history.
    Fail,
    /// A write that may or may not have taken effect (its return is treated
    /// as +infinity). An unknown read tells nothing and is dropped.
    Unknown,
}

/// One client operation.
#[derive(Clone, Debug)]
pub struct Op {
    pub kind: Kind,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    /// For [`Kind::Cas`] and [`Kind::CasConflict`]: the value compared
    /// against (None: absent); ignored otherwise.
    pub expected: Option<Vec<u8>>,
    pub call: f64,
    pub ret: f64,
    pub outcome: Outcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Violation,
    /// The search ran out of time.
    Unknown,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Violation => "violation",
            Verdict::Unknown => "unknown",
        }
    }
}

/// The result for one key.
#[derive(Clone, Debug)]
pub struct KeyReport {
    pub key: Vec<u8>,
    pub verdict: Verdict,
    /// Operations that took part in the search (failed ops, unknown reads and
    /// unobserved unknown writes are left out).
    pub checked: usize,
    /// Why the verdict is not `Ok`; empty when it is.
    pub explanation: String,
    /// Indices (into the checked slice) of the operations the explanation names.
    pub involved: Vec<usize>,
}

/// Checks every key; keys are reported in order of first appearance.
pub fn check(ops: &[Op], deadline: Option<Instant>) -> Vec<KeyReport> {
    let mut order: Vec<&[u8]> = Vec::new();
    let mut by_key: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key
            .entry(&op.key)
            .or_insert_with(|| {
                order.push(&op.key);
                Vec::new()
            })
            .push(i);
    }
    order
        .into_iter()
        .map(|key| {
            let indices = by_key.remove(key).unwrap_or_default();
            check_key(ops, key, &indices, deadline)
        })
        .collect()
}

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

/// One operation of one key, ready for the search.
struct Entry {
    /// Index into the caller's slice.
    index: usize,
    kind: Kind,
    /// Interned value: 0 is "missing".
    value: u32,
    /// Interned expected value of a CAS.
    expected: u32,
    call: f64,
    ret: f64,
}

fn check_key<'a>(
    ops: &'a [Op],
    key: &[u8],
    indices: &[usize],
    deadline: Option<Instant>,
) -> KeyReport {
    let mut report = KeyReport {
        key: key.to_vec(),
        verdict: Verdict::Ok,
        checked: 0,
        explanation: String::new(),
        involved: Vec::new(),
    };
    // Values read by completed reads: an unknown write of any other value
    // is never observed, and dropping it changes nothing (it can always be
    // linearized at the very end, which is the same as never).
    let observed: HashSet<Option<&[u8]>> = indices
        .iter()
        .map(|&i| &ops[i])
        .filter(|op| op.outcome == Outcome::Ok)
        .flat_map(|op| match op.kind {
            Kind::Read => vec![op.value.as_deref()],
            // A CAS observes its expected value (swapped), or tells it was
            // not there; a value it compared against counts as observed.
            Kind::Cas | Kind::CasConflict => vec![op.expected.as_deref()],
            Kind::Write => Vec::new(),
        })
        .collect();
    let written: HashSet<Option<&[u8]>> = indices
        .iter()
        .map(|&i| &ops[i])
        .filter(|op| matches!(op.kind, Kind::Write | Kind::Cas) && op.outcome != Outcome::Fail)
        .map(|op| op.value.as_deref())
        .collect();
    let any_conflict = indices.iter().any(|&i| ops[i].kind == Kind::CasConflict);
    let mut interned: HashMap<Option<&'a [u8]>, u32> = HashMap::from([(None, 0)]);
    let mut entries = Vec::new();
    for &i in indices {
        let op = &ops[i];
        let ret = match (op.kind, op.outcome) {
            (_, Outcome::Fail) | (Kind::Read | Kind::CasConflict, Outcome::Unknown) => continue,
            // (Unless a CONFLICT may need it: it can explain why a register
            // did not hold what a CAS expected.)
            (Kind::Write | Kind::Cas, Outcome::Unknown)
                if !observed.contains(&op.value.as_deref()) && !any_conflict =>
            {
                continue;
            }
            (Kind::Write | Kind::Cas, Outcome::Unknown) => f64::INFINITY,
            (_, Outcome::Ok) => op.ret,
        };
        let seen = match op.kind {
            Kind::Read => op.value.as_deref(),
            Kind::Cas => op.expected.as_deref(),
            Kind::Write | Kind::CasConflict => None,
        };
        if seen.is_some() && op.outcome == Outcome::Ok && !written.contains(&seen) {
            report.verdict = Verdict::Violation;
            report.explanation = format!(
                "{} returned a value no write to this key ever wrote",
                describe(i, op)
            );
            report.involved = vec![i];
            return report;
        }
        let mut intern = |v: Option<&'a [u8]>| {
            let next_id = u32::try_from(interned.len()).unwrap_or(u32::MAX);
            *interned.entry(v).or_insert(next_id)
        };
        let value = intern(op.value.as_deref());
        let expected = intern(op.expected.as_deref());
        entries.push(Entry {
            index: i,
            kind: op.kind,
            value,
            expected,
            call: op.call,
            ret,
        });
    }
    report.checked = entries.len();
    // In call order, the linearized set is almost always "every entry below
    // some index, plus a few": the cache keys stay small (see `Frontier`).
    entries.sort_by(|a, b| a.call.total_cmp(&b.call));
    let search = Search::new(&entries);
    match search.run(deadline) {
        SearchResult::Linearizable => {}
        SearchResult::OutOfTime { steps } => {
            report.verdict = Verdict::Unknown;
            report.explanation = format!(
                "search budget exhausted after {steps} steps on {} operations",
                entries.len()
            );
        }
        SearchResult::Violation(stuck) => {
            report.verdict = Verdict::Violation;
            explain(ops, &entries, &stuck, &mut report);
        }
    }
    report
}

/// Where the search got furthest before failing.
struct Stuck {
    /// Entries linearized, in order.
    prefix: Vec<usize>,
    /// The entry whose return came before it could be placed.
    op: usize,
    /// Register value after the prefix.
    state: u32,
}

enum SearchResult {
    Linearizable,
    Violation(Stuck),
    OutOfTime { steps: u64 },
}

/// The event list: node 0 is the head, node `2i + 1` is the call of entry `i`
/// and node `2i + 2` its return.
struct Search<'a> {
    entries: &'a [Entry],
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl<'a> Search<'a> {
    fn new(entries: &'a [Entry]) -> Self {
        let mut events: Vec<(f64, bool, usize)> = Vec::with_capacity(entries.len() * 2);
        for (i, e) in entries.iter().enumerate() {
            events.push((e.call, false, 2 * i + 1));
            events.push((e.ret, true, 2 * i + 2));
        }
        // By time; at equal times calls first, so ties count as concurrent.
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let size = entries.len() * 2 + 1;
        let mut next = vec![NIL; size];
        let mut prev = vec![NIL; size];
        let mut last = HEAD;
        for &(_, _, node) in &events {
            next[last] = node;
            prev[node] = last;
            last = node;
        }
        Search {
            entries,
            next,
            prev,
        }
    }

    fn is_call(node: usize) -> bool {
        node % 2 == 1
    }

    fn entry_of(node: usize) -> usize {
        (node - 1) / 2
    }

    /// Takes entry `i`'s call and return out of the list.
    fn lift(&mut self, i: usize) {
        let (call, ret) = (2 * i + 1, 2 * i + 2);
        self.next[self.prev[call]] = self.next[call];
        self.prev[self.next[call]] = self.prev[call];
        self.next[self.prev[ret]] = self.next[ret];
        if self.next[ret] != NIL {
            self.prev[self.next[ret]] = self.prev[ret];
        }
    }

    /// Undoes [`Search::lift`] (lifts must be undone in reverse order).
    fn unlift(&mut self, i: usize) {
        let (call, ret) = (2 * i + 1, 2 * i + 2);
        if self.next[ret] != NIL {
            self.prev[self.next[ret]] = ret;
        }
        self.next[self.prev[ret]] = ret;
        self.prev[self.next[call]] = call;
        self.next[self.prev[call]] = call;
    }

    fn step(&self, state: u32, i: usize) -> Option<u32> {
        let entry = &self.entries[i];
        match entry.kind {
            Kind::Write => Some(entry.value),
            Kind::Read => (entry.value == state).then_some(state),
            // Swapped for sure: only from the expected value.
            Kind::Cas if entry.ret.is_finite() => (entry.expected == state).then_some(entry.value),
            // Unknown: where the register held the expected value it swapped;
            // anywhere else it changed nothing (it conflicted, or never ran).
            Kind::Cas if entry.expected == state => Some(entry.value),
            Kind::Cas => Some(state),
            Kind::CasConflict => (entry.expected != state).then_some(state),
        }
    }

    fn run(self, deadline: Option<Instant>) -> SearchResult {
        self.run_with(deadline, CACHE_BYTES)
    }

    fn run_with(mut self, deadline: Option<Instant>, cache_bytes: usize) -> SearchResult {
        let words = self.entries.len().div_ceil(64);
        let mut linearized = Frontier::new(words);
        let mut cache: HashSet<(u32, Box<[u64]>, u32)> = HashSet::new();
        let mut cached_bytes = 0usize;
        let mut stack: Vec<(usize, u32)> = Vec::new();
        let mut state = 0u32;
        let mut best: Option<Stuck> = None;
        let mut steps = 0u64;
        let mut node = self.next[HEAD];
        while self.next[HEAD] != NIL {
            steps += 1;
            if steps.is_multiple_of(4096) && deadline.is_some_and(|d| Instant::now() >= d) {
                return SearchResult::OutOfTime { steps };
            }
            if Self::is_call(node) {
                let i = Self::entry_of(node);
                if let Some(new_state) = self.step(state, i) {
                    linearized.set(i);
                    let (low, window) = linearized.key();
                    let cost = window.len() * 8 + CACHE_ENTRY_OVERHEAD;
                    if cached_bytes + cost > cache_bytes {
                        // Forgetting seen states only costs repeated work,
                        // never a wrong verdict; the deadline still bounds it.
                        cache.clear();
                        cached_bytes = 0;
                    }
                    if cache.insert((low, window.into(), new_state)) {
                        cached_bytes += cost;
                        stack.push((i, state));
                        state = new_state;
                        self.lift(i);
                        node = self.next[HEAD];
                        continue;
                    }
                    linearized.clear(i);
                }
                node = self.next[node];
            } else {
                // A return whose operation is not linearized: back up.
                if best.as_ref().is_none_or(|b| stack.len() > b.prefix.len()) {
                    best = Some(Stuck {
                        prefix: stack.iter().map(|&(i, _)| i).collect(),
                        op: Self::entry_of(node),
                        state,
                    });
                }
                let Some((i, old_state)) = stack.pop() else {
                    return match best {
                        Some(stuck) => SearchResult::Violation(stuck),
                        None => SearchResult::Linearizable,
                    };
                };
                state = old_state;
                linearized.clear(i);
                self.unlift(i);
                node = self.next[2 * i + 1];
            }
        }
        SearchResult::Linearizable
    }
}

/// Memory the search's cache of seen states may use per key before it is
/// emptied and refilled.
const CACHE_BYTES: usize = 64 << 20;
/// What a cached state costs beyond its window: the box, the hash set's slot.
const CACHE_ENTRY_OVERHEAD: usize = 48;

/// The set of linearized entries as a bitset that also knows its lowest
/// unset word and highest set word, so a cache key is only the window
/// between them: exact (two different sets never share a key) and small
/// (entries are in call order, so everything below the window is set).
struct Frontier {
    bits: Vec<u64>,
    /// Every word below `low` is all ones.
    low: usize,
    /// Every word from `high` on is zero.
    high: usize,
}

impl Frontier {
    fn new(words: usize) -> Self {
        Frontier {
            bits: vec![0; words],
            low: 0,
            high: 0,
        }
    }

    fn set(&mut self, i: usize) {
        let word = i / 64;
        self.bits[word] |= 1 << (i % 64);
        self.high = self.high.max(word + 1);
        while self.low < self.bits.len() && self.bits[self.low] == u64::MAX {
            self.low += 1;
        }
    }

    fn clear(&mut self, i: usize) {
        let word = i / 64;
        self.bits[word] &= !(1 << (i % 64));
        self.low = self.low.min(word);
        while self.high > 0 && self.bits[self.high - 1] == 0 {
            self.high -= 1;
        }
    }

    /// `(low, words low..high)`: determines the set exactly.
    fn key(&self) -> (u32, &[u64]) {
        let low = self.low.min(self.high);
        (low as u32, &self.bits[low..self.high])
    }
}

/// Names the stuck operation, the register value after the longest
/// linearizable prefix, the last writes of that prefix and the operations
/// concurrent with the stuck one.
fn explain(ops: &[Op], entries: &[Entry], stuck: &Stuck, report: &mut KeyReport) {
    let value_of = |id: u32| -> Option<&[u8]> {
        if id == 0 {
            return None;
        }
        entries
            .iter()
            .find(|e| e.value == id)
            .and_then(|e| ops[e.index].value.as_deref())
    };
    let target = &entries[stuck.op];
    let mut involved = vec![target.index];
    let last_writes: Vec<usize> = stuck
        .prefix
        .iter()
        .rev()
        .filter(|&&i| matches!(entries[i].kind, Kind::Write | Kind::Cas))
        .take(2)
        .map(|&i| entries[i].index)
        .collect();
    let linearized: HashSet<usize> = stuck.prefix.iter().copied().collect();
    let concurrent: Vec<usize> = entries
        .iter()
        .enumerate()
        .filter(|&(i, e)| {
            i != stuck.op
                && !linearized.contains(&i)
                && e.call <= target.ret
                && target.call <= e.ret
        })
        .map(|(_, e)| e.index)
        .take(6)
        .collect();
    involved.extend(last_writes.iter().rev());
    involved.extend(&concurrent);
    let list = |indices: &[usize]| -> String {
        if indices.is_empty() {
            return "none".into();
        }
        indices
            .iter()
            .map(|&i| describe(i, &ops[i]))
            .collect::<Vec<_>>()
            .join("; ")
    };
    report.explanation = format!(
        "{} cannot take effect before it returns. The longest linearizable prefix has {} of {} \
         operations and leaves the register at {}; its last writes: {}; unplaced operations \
         concurrent with it: {}",
        describe(target.index, &ops[target.index]),
        stuck.prefix.len(),
        entries.len(),
        show(value_of(stuck.state)),
        list(&last_writes.iter().rev().copied().collect::<Vec<_>>()),
        list(&concurrent),
    );
    report.involved = involved;
}

/// `#12 read(k) -> 'v' [1.000000, 1.002000]`
pub fn describe(index: usize, op: &Op) -> String {
    let key = show(Some(&op.key));
    let expected = show(op.expected.as_deref());
    let what = match (op.kind, &op.value) {
        (Kind::Read, value) => format!("read({key}) -> {}", show(value.as_deref())),
        (Kind::Write, None) => format!("delete({key})"),
        (Kind::Write, Some(value)) => format!("write({key}, {})", show(Some(value))),
        (Kind::Cas, None) => format!("cad({key}, if {expected})"),
        (Kind::Cas, Some(value)) => {
            format!("cas({key}, {expected} -> {})", show(Some(value)))
        }
        (Kind::CasConflict, _) => format!("cas({key}, if {expected}) -> conflict"),
    };
    let ret = if op.outcome == Outcome::Unknown {
        "?".to_string()
    } else {
        format!("{:.6}", op.ret)
    };
    let outcome = match op.outcome {
        Outcome::Ok => "",
        Outcome::Fail => " failed",
        Outcome::Unknown => " unknown",
    };
    format!("#{index} {what}{outcome} [{:.6}, {ret}]", op.call)
}

/// A value for humans: quoted, escaped, cut at 40 bytes; `None` for missing.
fn show(value: Option<&[u8]>) -> String {
    let Some(value) = value else {
        return "None".into();
    };
    let cut = &value[..value.len().min(40)];
    let text: String = cut.escape_ascii().to_string();
    if cut.len() < value.len() {
        format!("'{text}...'")
    } else {
        format!("'{text}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cas(
        kind: Kind,
        expected: Option<&str>,
        value: Option<&str>,
        call: f64,
        ret: f64,
        outcome: Outcome,
    ) -> Op {
        Op {
            expected: expected.map(|v| v.as_bytes().to_vec()),
            ..op(kind, value, call, ret, outcome)
        }
    }

    fn verdict(ops: &[Op]) -> Verdict {
        check(ops, None)[0].verdict
    }

    #[test]
    fn compare_and_set_swaps_only_from_the_expected_value() {
        use Kind::{Cas, CasConflict, Read, Write};
        use Outcome::{Ok, Unknown};
        let w = op(Write, Some("a"), 0.0, 1.0, Ok);
        // a -> b swapped, then a conflict against a: fine.
        let good = vec![
            w.clone(),
            cas(Cas, Some("a"), Some("b"), 2.0, 3.0, Ok),
            cas(CasConflict, Some("a"), Some("c"), 4.0, 5.0, Ok),
            op(Read, Some("b"), 6.0, 7.0, Ok),
        ];
        assert_eq!(verdict(&good), Verdict::Ok);
        // Swapping from a value the register no longer held.
        let twice = vec![
            w.clone(),
            cas(Cas, Some("a"), Some("b"), 2.0, 3.0, Ok),
            cas(Cas, Some("a"), Some("c"), 4.0, 5.0, Ok),
        ];
        assert_eq!(verdict(&twice), Verdict::Violation);
        // A conflict while the register held exactly the expected value.
        let bad_conflict = vec![
            w.clone(),
            cas(CasConflict, Some("a"), Some("c"), 2.0, 3.0, Ok),
        ];
        assert_eq!(verdict(&bad_conflict), Verdict::Violation);
        // An unknown write nobody read can still explain a conflict.
        let explained = vec![
            w.clone(),
            op(Write, Some("x"), 1.5, f64::INFINITY, Unknown),
            cas(CasConflict, Some("a"), Some("c"), 2.0, 3.0, Ok),
        ];
        assert_eq!(verdict(&explained), Verdict::Ok);
        // An unknown CAS whose expected value is long gone never swapped.
        let gone = vec![
            w.clone(),
            cas(Cas, Some("a"), Some("b"), 2.0, f64::INFINITY, Unknown),
            op(Write, Some("c"), 3.0, 4.0, Ok),
            cas(Cas, Some("c"), Some("d"), 5.0, 6.0, Ok),
            op(Read, Some("d"), 7.0, 8.0, Ok),
        ];
        assert_eq!(verdict(&gone), Verdict::Ok);
        // An unknown CAS may have swapped (the read saw it) or not.
        for read in ["a", "b"] {
            let maybe = vec![
                w.clone(),
                cas(Cas, Some("a"), Some("b"), 2.0, f64::INFINITY, Unknown),
                op(Read, Some(read), 4.0, 5.0, Ok),
            ];
            assert_eq!(verdict(&maybe), Verdict::Ok, "read {read}");
        }
        // Compare-and-delete from absent is refused; from a value, it deletes.
        let cad = vec![
            w,
            cas(Cas, Some("a"), None, 2.0, 3.0, Ok),
            cas(CasConflict, Some("a"), None, 4.0, 5.0, Ok),
            op(Read, None, 6.0, 7.0, Ok),
        ];
        assert_eq!(verdict(&cad), Verdict::Ok);
    }

    fn op(kind: Kind, value: Option<&str>, call: f64, ret: f64, outcome: Outcome) -> Op {
        Op {
            expected: None,
            kind,
            key: b"k".to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            call,
            ret,
            outcome,
        }
    }

    /// Writes of 0..n, each overlapping the next, each read back: linearizable.
    fn overlapping(n: usize) -> Vec<Op> {
        let mut ops = Vec::new();
        for i in 0..n {
            let t = i as f64;
            let v = i.to_string();
            ops.push(op(Kind::Write, Some(&v), t, t + 1.5, Outcome::Ok));
            ops.push(op(Kind::Read, Some(&v), t + 1.6, t + 1.7, Outcome::Ok));
        }
        ops
    }

    fn entries(ops: &[Op]) -> Vec<Entry> {
        let mut interned: HashMap<Option<&[u8]>, u32> = HashMap::from([(None, 0)]);
        let mut entries: Vec<Entry> = ops
            .iter()
            .enumerate()
            .map(|(index, o)| {
                let next = interned.len() as u32;
                let value = *interned.entry(o.value.as_deref()).or_insert(next);
                Entry {
                    index,
                    kind: o.kind,
                    value,
                    expected: 0,
                    call: o.call,
                    ret: o.ret,
                }
            })
            .collect();
        entries.sort_by(|a, b| a.call.total_cmp(&b.call));
        entries
    }

    #[test]
    fn frontier_keys_are_exact_and_small() {
        let mut f = Frontier::new(4);
        for i in 0..130 {
            f.set(i);
        }
        assert_eq!(f.key(), (2, &[0b11u64][..]));
        f.clear(5);
        let (low, window) = f.key();
        assert_eq!(low, 0);
        assert_eq!(window.len(), 3);
        f.set(5);
        f.set(200);
        assert_eq!(f.key().0, 2);
        assert_eq!(f.key().1.len(), 2);
        f.clear(200);
        assert_eq!(f.key(), (2, &[0b11u64][..]));
    }

    #[test]
    fn a_cache_that_forgets_never_changes_the_verdict() {
        let good = overlapping(300);
        let mut bad = good.clone();
        // A read of an old value after a newer write completed.
        bad.push(op(Kind::Read, Some("3"), 400.0, 400.5, Outcome::Ok));
        for (ops, linearizable) in [(&good, true), (&bad, false)] {
            let entries = entries(ops);
            for budget in [0, 4096, CACHE_BYTES] {
                let result = Search::new(&entries).run_with(None, budget);
                assert_eq!(
                    matches!(result, SearchResult::Linearizable),
                    linearizable,
                    "budget {budget}"
                );
            }
        }
    }

    #[test]
    fn unknown_on_budget_not_a_wrong_verdict() {
        let ops = overlapping(2000);
        let past = Instant::now();
        let reports = check(&ops, Some(past));
        assert!(
            reports
                .iter()
                .all(|r| matches!(r.verdict, Verdict::Unknown | Verdict::Ok)),
            "an exhausted budget may only say unknown (or finish)"
        );
    }
}
