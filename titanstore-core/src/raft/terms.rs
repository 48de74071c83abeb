//! The terms of the log's entries, kept as runs of equal terms: a term
//! covers thousands of entries, so the log of millions costs a few runs.

use std::collections::VecDeque;

use crate::types::Term;

/// The terms of a sequence of entries, by position (0: the first). Each run
/// is `(position where it starts, term)`; positions count from the sequence's
/// creation, so dropping entries from the front only moves `start`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TermRuns {
    runs: VecDeque<(u64, Term)>,
    /// Position of the first entry.
    start: u64,
    /// Position after the last entry.
    end: u64,
}

impl TermRuns {
    pub(crate) fn from_terms(terms: impl IntoIterator<Item = Term>) -> Self {
        let mut runs = TermRuns::default();
        for term in terms {
            runs.push_back(term);
        }
        runs
    }

    pub(crate) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub(crate) fn push_back(&mut self, term: Term) {
        if self.runs.back().is_none_or(|(_, t)| *t != term) {
            self.runs.push_back((self.end, term));
        }
        self.end += 1;
    }

    pub(crate) fn back(&self) -> Option<Term> {
        (self.end > self.start)
            .then(|| self.runs.back().map(|(_, t)| *t))
            .flatten()
    }

    pub(crate) fn get(&self, pos: usize) -> Option<Term> {
        let at = self.start.checked_add(pos as u64)?;
        if at >= self.end {
            return None;
        }
        let run = self.runs.partition_point(|(first, _)| *first <= at);
        self.runs.get(run.checked_sub(1)?).map(|(_, t)| *t)
    }

    /// Keeps the first `keep` entries.
    pub(crate) fn truncate(&mut self, keep: usize) {
        let end = self.start + keep as u64;
        if end >= self.end {
            return;
        }
        while self.runs.back().is_some_and(|(first, _)| *first >= end) {
            self.runs.pop_back();
        }
        self.end = end;
    }

    pub(crate) fn clear(&mut self) {
        self.runs.clear();
        self.start = self.end;
    }

    /// Drops the first `n` entries (all, if there are fewer).
    pub(crate) fn drop_front(&mut self, n: usize) {
        self.start = (self.start + n as u64).min(self.end);
        while self.runs.len() > 1 && self.runs[1].0 <= self.start {
            self.runs.pop_front();
        }
        if self.start == self.end {
            self.runs.clear();
        }
    }

    /// How many entries come before the first one whose term is not below
    /// `term` (terms never decrease along a log).
    pub(crate) fn count_below(&self, term: Term) -> usize {
        self.count_until(|t| t >= term)
    }

    /// How many entries come before the first one whose term is above `term`.
    pub(crate) fn count_at_most(&self, term: Term) -> usize {
        self.count_until(|t| t > term)
    }

    fn count_until(&self, stop: impl Fn(Term) -> bool) -> usize {
        let run = self.runs.partition_point(|(_, t)| !stop(*t));
        match self.runs.get(run) {
            Some((first, _)) => ((*first).max(self.start) - self.start) as usize,
            None => self.len(),
        }
    }

    /// Runs held (what the terms cost).
    #[cfg(test)]
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Against a plain vector of terms, through pushes, cuts, front drops
    /// and the bisection counts.
    #[test]
    fn runs_answer_as_a_vector_of_terms_does() {
        let mut plain: VecDeque<Term> = VecDeque::new();
        let mut runs = TermRuns::default();
        let mut term = 1;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for step in 0..4000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            match seed % 100 {
                0..=79 => {
                    if seed.is_multiple_of(97) {
                        term += 1 + seed % 3;
                    }
                    plain.push_back(term);
                    runs.push_back(term);
                }
                80..=89 => {
                    let keep = (seed / 100) as usize % (plain.len() + 1);
                    plain.truncate(keep);
                    runs.truncate(keep);
                }
                _ => {
                    let n = (seed / 100) as usize % 40;
                    plain.drain(..n.min(plain.len()));
                    runs.drop_front(n);
                }
            }
            assert_eq!(runs.len(), plain.len(), "step {step}");
            assert_eq!(runs.back(), plain.back().copied(), "step {step}");
            for pos in [
                0,
                plain.len() / 2,
                plain.len().saturating_sub(1),
                plain.len(),
            ] {
                assert_eq!(
                    runs.get(pos),
                    plain.get(pos).copied(),
                    "step {step} pos {pos}"
                );
            }
            for t in [0, 1, term / 2, term, term + 1] {
                assert_eq!(
                    runs.count_below(t),
                    plain.partition_point(|x| *x < t),
                    "step {step}"
                );
                assert_eq!(
                    runs.count_at_most(t),
                    plain.partition_point(|x| *x <= t),
                    "step {step}"
                );
            }
        }
        assert!(runs.runs() <= term as usize);
        runs.clear();
        assert_eq!((runs.len(), runs.back(), runs.get(0)), (0, None, None));
    }
}
