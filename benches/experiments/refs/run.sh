#!/usr/bin/env bash
# Runs the reference-projection experiment on a ruff pair (docs/benchmarks.md, "Executables: what
# reference projection buys"). Fetch the releases first:
#   SEQS="ruff:0.6.0,0.6.1,0.6.2,0.6.3" bash ../shared/bench/fetch-releases.sh
# usage: run.sh whole|seg OLD NEW TRANSFORM [zdict]
#   TRANSFORM: none | bcj | bcj+jcc | rel32 | rip | abs64 | rel32+rip | refs (rel32+rip+abs64),
#              each with an optional +eh (.eh_frame pointers), +sym, +symname
#   env: REALIGN=1 (second bidiff pass on the projected file), POSVOTE=1 (positional votes for
#        the label map), MAP=longest|region (no label map), BREAK=1 (bytes per ELF section)
# e.g.  POSVOTE=1 REALIGN=1 benches/experiments/refs/run.sh seg 0.6.0 0.6.1 rel32+rip+eh zdict
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=$1 old=$2 new=$3
shift 3
releases=${RELEASES:-$HOME/.cache/relsync-releases}
bin() { echo "$releases/ruff-$1/ruff-X.data/scripts/ruff"; }
cargo build --release --quiet --manifest-path "$here/Cargo.toml"
RAYON_NUM_THREADS=1 /usr/bin/time -v "$here/target/release/exp-refs" "$mode" "$(bin "$old")" "$(bin "$new")" "$@"
