#!/usr/bin/env bash
# Runs every check and test TitanStore has: formatting, lints, Rust tests and
# (once the Python package exists) the pytest suites. Works on a fresh machine
# with a Rust toolchain and Python 3: it installs what else it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

step "all tests passed"
