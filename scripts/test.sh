#!/usr/bin/env bash
# The relsync test suite: formatting, lints, then every test (unit, property, golden vectors,
# and end-to-end tests against a real nginx origin). This is what CI runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$(dirname "$here")"
"$here/setup.sh"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo test --workspace --locked
