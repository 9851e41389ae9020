#!/usr/bin/env bash
# The relsync test suite: formatting, lints, then every test (unit, property, golden vectors,
# and end-to-end tests against a real nginx origin), then a 30 s smoke run of each fuzz target
# (scripts/fuzz.sh; docs/fuzzing.md). This is what CI runs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$(dirname "$here")"
"$here/setup.sh"
cargo fmt --all --check
cargo fmt --all --check --manifest-path fuzz/Cargo.toml
cargo clippy --workspace --all-targets --locked -- -D warnings
# The engine's fault-injecting seam is built only for the crash tests; lint it too. Over the
# whole workspace, so the dependencies resolve as above and are not checked again.
cargo clippy --workspace --all-targets --features relsync-engine/fault-injection --locked -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet
cargo test --workspace --locked
FUZZ_CODEGEN_UNITS=${FUZZ_CODEGEN_UNITS:-16} "$here/fuzz.sh" "${FUZZ_SECONDS:-30}"
