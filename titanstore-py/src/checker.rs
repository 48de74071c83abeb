//! `check_kv_history`: the linearizability checker behind
//! `titanstore.chaos`. This file only converts between Python and the pure
//! algorithm in [`wgl`]; the search runs with the GIL released.

use titanstore_core::checker as wgl;

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use titanstore_core::checker::{Kind, Op, Outcome, Verdict};

/// One operation as Python passes it:
/// `(kind, key, value, call_time, return_time, outcome[, expected])`.
#[derive(FromPyObject)]
pub enum PyOp {
    WithExpected(
        String,
        Vec<u8>,
        Option<Vec<u8>>,
        f64,
        f64,
        String,
        Option<Vec<u8>>,
    ),
    Plain(String, Vec<u8>, Option<Vec<u8>>, f64, f64, String),
}

/// The checker's answer for a whole history.
#[pyclass(module = "titanstore._titanstore", frozen)]
pub struct CheckResult {
    verdict: Verdict,
    keys: Vec<(Vec<u8>, Verdict)>,
    key: Option<Vec<u8>>,
    explanation: String,
    ops: Vec<usize>,
    checked: usize,
    elapsed: f64,
}

#[pymethods]
impl CheckResult {
    /// `"ok"`, `"violation"` or `"unknown"` (the search ran out of time).
    #[getter]
    fn verdict(&self) -> &'static str {
        self.verdict.as_str()
    }

    /// True when every key's history is linearizable.
    #[getter]
    fn ok(&self) -> bool {
        self.verdict == Verdict::Ok
    }

    /// Each key's verdict.
    #[getter]
    fn keys<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, verdict) in &self.keys {
            dict.set_item(PyBytes::new(py, key), verdict.as_str())?;
        }
        Ok(dict)
    }

    /// The first key that is not `ok` (a violation before an unknown), if any.
    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.key.as_ref().map(|key| PyBytes::new(py, key))
    }

    /// Why that key is not `ok`; empty when the history is linearizable.
    #[getter]
    fn explanation(&self) -> &str {
        &self.explanation
    }

    /// Indices (into the list given) of the operations the explanation names.
    #[getter]
    fn ops(&self) -> Vec<usize> {
        self.ops.clone()
    }

    /// How many operations took part in the search.
    #[getter]
    fn checked(&self) -> usize {
        self.checked
    }

    /// Seconds the check took.
    #[getter]
    fn elapsed(&self) -> f64 {
        self.elapsed
    }

    fn __repr__(&self) -> String {
        let mut repr = format!(
            "CheckResult(verdict={:?}, keys={}, checked={}",
            self.verdict.as_str(),
            self.keys.len(),
            self.checked
        );
        if !self.explanation.is_empty() {
            repr.push_str(&format!(", explanation={:?}", self.explanation));
        }
        repr.push(')');
        repr
    }
}

fn parse(index: usize, op: PyOp) -> PyResult<Op> {
    let (kind, key, value, call, ret, outcome, expected) = match op {
        PyOp::WithExpected(k, key, v, c, r, o, e) => (k, key, v, c, r, o, e),
        PyOp::Plain(k, key, v, c, r, o) => (k, key, v, c, r, o, None),
    };
    let bad = |msg: String| PyValueError::new_err(format!("operation {index}: {msg}"));
    let kind = match (kind.as_str(), &value) {
        ("read", _) => Kind::Read,
        ("write", Some(_)) => Kind::Write,
        ("delete", None) => Kind::Write,
        ("cas", _) => Kind::Cas,
        ("cas-conflict", _) => Kind::CasConflict,
        ("write", None) => return Err(bad("a write needs a value".into())),
        ("delete", Some(_)) => return Err(bad("a delete takes no value".into())),
        (other, _) => {
            return Err(bad(format!(
                "kind must be 'read', 'write', 'delete', 'cas' or 'cas-conflict', not {other:?}"
            )));
        }
    };
    let outcome = match outcome.as_str() {
        "ok" => Outcome::Ok,
        "fail" => Outcome::Fail,
        "unknown" => Outcome::Unknown,
        other => {
            return Err(bad(format!(
                "outcome must be 'ok', 'fail' or 'unknown', not {other:?}"
            )));
        }
    };
    if !call.is_finite() {
        return Err(bad("the call time must be finite".into()));
    }
    if outcome == Outcome::Ok && !(ret >= call && ret.is_finite()) {
        return Err(bad(format!(
            "a completed operation must return (at {ret}) after its call (at {call})"
        )));
    }
    if kind == Kind::CasConflict && outcome != Outcome::Ok {
        return Err(bad(
            "a 'cas-conflict' is an answer: its outcome must be 'ok'".into(),
        ));
    }
    Ok(Op {
        kind,
        key,
        value,
        expected,
        call,
        ret,
        outcome,
    })
}

/// Checks a key-value history for linearizability, each key a register.
///
/// `ops` holds `(kind, key, value, call_time, return_time, outcome)` with
/// kind `"read"` (value: what was read, None when missing), `"write"`
/// (value: what was written) or `"delete"` (value None); or the same with a
/// seventh item `expected` for kind `"cas"` (the register held `expected`,
/// None for absent, and became `value`, None for a compare-and-delete) and
/// `"cas-conflict"` (answered CONFLICT: it did not hold `expected`); and outcome `"ok"`,
/// `"fail"` (never applied: ignored) or `"unknown"` (a write that may have
/// been applied: its return time is ignored). Keys whose search is still
/// running after `timeout` seconds get the verdict `"unknown"`.
#[pyfunction]
#[pyo3(signature = (ops, timeout = 30.0))]
pub fn check_kv_history(py: Python<'_>, ops: Vec<PyOp>, timeout: f64) -> PyResult<CheckResult> {
    let budget = Duration::try_from_secs_f64(timeout)
        .map_err(|_| PyValueError::new_err("timeout must be >= 0 seconds"))?;
    let ops = ops
        .into_iter()
        .enumerate()
        .map(|(i, op)| parse(i, op))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(py.detach(move || {
        let started = Instant::now();
        let reports = wgl::check(&ops, started.checked_add(budget));
        let worst = reports
            .iter()
            .find(|r| r.verdict == Verdict::Violation)
            .or_else(|| reports.iter().find(|r| r.verdict == Verdict::Unknown));
        CheckResult {
            verdict: worst.map_or(Verdict::Ok, |r| r.verdict),
            key: worst.map(|r| r.key.clone()),
            explanation: worst.map(|r| r.explanation.clone()).unwrap_or_default(),
            ops: worst.map(|r| r.involved.clone()).unwrap_or_default(),
            checked: reports.iter().map(|r| r.checked).sum(),
            keys: reports.into_iter().map(|r| (r.key, r.verdict)).collect(),
            elapsed: started.elapsed().as_secs_f64(),
        }
    }))
}
