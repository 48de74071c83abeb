//! The safety invariants, checked after every tick against the global
//! history: election safety, log matching, leader completeness, state
//! machine safety (plus linearizable reads in `handle_ready`).

use titanstore_core::types::Entry;

use super::Sim;

impl Sim {
    pub(super) fn record_committed(&mut self, id: &str, e: &Entry) -> Result<(), String> {
        match self.committed.get(&e.index) {
            Some(c) if c != e => Err(format!(
                "state machine safety: {id} committed {e:?} but {c:?} was committed at that index"
            )),
            Some(_) => Ok(()),
            None => {
                self.committed.insert(e.index, e.clone());
                self.stats.max_commit = self.stats.max_commit.max(e.index);
                Ok(())
            }
        }
    }

    /// Every node's commit index only covers entries agreed globally.
    pub(super) fn check_commits(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            let Some(raft) = self.nodes[i].raft.as_ref() else {
                continue;
            };
            let commit = raft.status().commit;
            let from = self.nodes[i].commit_checked + 1;
            let id = self.nodes[i].id.clone();
            let found: Vec<Entry> = (from..=commit)
                .filter_map(|idx| self.nodes[i].shadow.get(idx).cloned())
                .collect();
            for e in &found {
                self.record_committed(&id, e)?;
            }
            self.nodes[i].commit_checked = self.nodes[i].commit_checked.max(commit);
        }
        Ok(())
    }

    /// A new leader's log holds every entry committed so far.
    pub(super) fn check_leader_completeness(&self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        for (idx, e) in self.committed.range(node.shadow.snap_index + 1..) {
            if node.shadow.get(*idx) != Some(e) {
                return Err(format!(
                    "leader completeness: new leader {} lacks committed entry {idx}",
                    node.id
                ));
            }
        }
        Ok(())
    }

    /// Full log matching: equal (index, term) implies equal prefixes.
    pub(super) fn check_log_matching(&self) -> Result<(), String> {
        for a in &self.nodes {
            for b in &self.nodes {
                if a.id >= b.id {
                    continue;
                }
                let lo = a.shadow.snap_index.max(b.shadow.snap_index) + 1;
                let hi = a.shadow.last_index().min(b.shadow.last_index());
                let mut idx = hi;
                // Find the highest index where both agree on the term...
                while idx >= lo && a.shadow.term(idx) != b.shadow.term(idx) {
                    idx -= 1;
                }
                // ...then everything from there down must be identical.
                while idx >= lo {
                    if a.shadow.get(idx) != b.shadow.get(idx) {
                        return Err(format!(
                            "log matching: {} and {} differ at {idx}",
                            a.id, b.id
                        ));
                    }
                    idx -= 1;
                }
            }
        }
        Ok(())
    }
}
