#!/usr/bin/env bash
# Runs every check and test TitanStore has: formatting, lints, Rust tests and
# (once the Python package exists) the pytest suites. Works on a fresh machine
# with a Rust toolchain and Python 3: it installs what else it needs.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages the tests need (installed when missing)"
# The chaos report test renders report.html in headless Chromium; power loss
# mounts a FUSE filesystem (fusermount3, Debian package fuse3) where
# /dev/fuse exists; the peer TLS test makes its certificates with openssl.
missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [[ -e /dev/fuse ]] && ! command -v fusermount3 >/dev/null 2>&1; then
    missing+=(fuse3)
fi
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
    else
        echo "missing ${missing[*]} and cannot install here (needs root and apt-get)" >&2
    fi
fi
REQUIRE_FUSE=""
[[ -e /dev/fuse ]] && REQUIRE_FUSE=1

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test"
cargo test --workspace

# The Python package is built with the same (dev) profile as the Rust tests,
# so the dependency tree is compiled once; `pip install .` alone builds release.
VENV=$(realpath -m "${TITANSTORE_VENV:-.venv}")
ROOT=$PWD
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
step "python: venv $VENV with pytest and mypy"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pytest>=8" "mypy>=1.10"

step "python: pip install . (maturin)"
MATURIN_PEP517_ARGS="--profile dev" "$VENV/bin/python" -m pip install --quiet \
    --disable-pip-version-check --force-reinstall --no-deps .

step "python: mypy --strict and stubtest of the extension's .pyi"
"$VENV/bin/python" -m mypy
"$VENV/bin/python" -m mypy.stubtest titanstore._titanstore

step "pytest"
# Run from outside the checkout so the installed package is what is tested.
(cd "${TMPDIR:-/tmp}" && TITANSTORE_SERVER_BIN="$TARGET_DIR/debug/titanstore-server" TITANSTORE_REQUIRE_CHROMIUM=1 \
    TITANSTORE_REQUIRE_FUSE="$REQUIRE_FUSE" \
    PATH="$VENV/bin:$PATH" "$VENV/bin/python" -m pytest -p no:cacheprovider \
    -c "$ROOT/pyproject.toml" --rootdir "$ROOT" "$ROOT/pytests")

step "all tests passed"
