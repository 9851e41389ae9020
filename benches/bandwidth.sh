#!/usr/bin/env bash
# Bandwidth harness: publish real release sequences (../shared/bench) and a synthetic one to an
# origin served by nginx on 127.0.0.1, update or install each scenario with `relsync update`, and
# run the other tools on the same release pairs, side by side.
#
#   benches/bandwidth.sh            everything (~17 min on 2 cores, mostly zstd -19 in the pushes;
#                                   ~15 min more while the other tools' results are not cached)
#   benches/bandwidth.sh --quick    ruff 0.6.0->0.6.1 and the synthetic set only (~3 min;
#                                   ~3 min more while the other tools' results are not cached)
#
# relsync, per scenario: bytes on the wire and requests (from nginx's access log, checked against
# the client's count) and the request bound, wall time, client CPU time and peak RSS; every
# installed tree is diffed with its release. The other tools run on tars of the releases: the
# full download (zstd -19 --long=31 of the new tar), zstd --patch-from, bsdiff 4.3 and xdelta3
# -9 -S djw (patch sizes), and casync (64 KiB chunks, zstd), bita (64 KiB, brotli 11) and zsync,
# whose clients fetch from the same nginx with the old tar as seed (bytes from nginx's log).
# Their results are cached in ~/.cache/relsync-tools-results by tool version and the tars'
# hashes; relsync is measured on every run. A tool that is not installed shows "—".
# Targets, marked PASS or FAIL: previous->new ≤ 1.0× patch-from; skip versions ≤ full, casync
# and bita; fresh install ≤ 1.05× full; client peak RSS ≤ 64 MiB; requests ≤ the bound.
#
# Scenarios, each sequence on its own channel: previous->new for each consecutive pair;
# older->new (0.6.0->0.6.2, 2.1.0->2.1.2) on a channel pushed with --delta-from 2; skip
# versions (a client at the first release updates to the newest: ruff 0.6.0->0.6.3, numpy
# 2.1.0->2.1.2, synthetic 1->3) on the previous->new channel, pushed with default settings; a
# fresh install of each newest release.
# The synthetic app is scripts/make-demo-release.py v1-v3.
#
# Installs what is missing: nginx and zstd (scripts/setup.sh), GNU time, bsdiff, xdelta3,
# casync and zsync with apt-get; bita 0.15.0 with cargo install into ~/.cache/relsync-tools
# (~9 min on 2 cores). Prints markdown tables; writes them to RESULTS/bandwidth.md with the
# charts as images (paths relative to docs/, for docs/benchmarks.md), the raw numbers to
# RESULTS/bandwidth.json and a chart per sequence to RESULTS/bandwidth-<sequence>.svg
# (benches/src/bin/chart.rs).
# Env: RELEASES (default ~/.cache/relsync-releases), RESULTS (default benches/results),
# RELSYNC_BENCH_PORT (default 18090), CARGO_TARGET_DIR (where the binaries are built).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
quick=()
case ${1:-} in
  "") ;;
  --quick) quick=(--quick) ;;
  -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
  *) echo "usage: benches/bandwidth.sh [--quick]" >&2; exit 2 ;;
esac

# Dependencies: nginx and zstd (setup.sh); GNU time for the client's CPU time and peak RSS; the
# other tools. Only GNU time is required: a tool that cannot be installed leaves its column empty.
"$root/scripts/setup.sh"
tools=$HOME/.cache/relsync-tools bita_version=0.15.0
need=()
[[ -x /usr/bin/time ]] || need+=(time)
for tool in bsdiff xdelta3 casync zsync; do command -v $tool >/dev/null || need+=($tool); done
have_bita() { [[ $("$tools/bin/bita" --version 2>/dev/null) == "bita $bita_version" ]]; }
if ! have_bita; then  # cargo builds bita against OpenSSL
  command -v pkg-config >/dev/null || need+=(pkg-config)
  dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
fi
if ((${#need[@]})); then
  echo "installing ${need[*]} ..." >&2
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq || true
  for pkg in "${need[@]}"; do
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null ||
      echo "warning: could not install $pkg" >&2
  done
fi
[[ -x /usr/bin/time ]] || { echo "bandwidth.sh: GNU time (/usr/bin/time) is required" >&2; exit 1; }
if ! have_bita; then
  echo "installing bita $bita_version into $tools (cargo install, ~9 min) ..." >&2
  cargo install --quiet --locked --root "$tools" --version "$bita_version" bita ||
    echo "warning: could not install bita; its column shows —" >&2
fi

releases=${RELEASES:-$HOME/.cache/relsync-releases}
if ((${#quick[@]})); then seqs="ruff:0.6.0,0.6.1"; else seqs="ruff:0.6.0,0.6.1,0.6.2,0.6.3 numpy:2.1.0,2.1.1,2.1.2"; fi
SEQS=$seqs bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2
# What is measured: the commit, plus any uncommitted changes outside benches/.
dirty=$(git -C "$root" status --porcelain -- . ':!benches' 2>/dev/null | cut -c4- | paste -sd, - | sed 's/,/, /g')
revision="commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)${dirty:+ with uncommitted changes to $dirty}"
# Two builds, so that the chart's dependencies cannot change the features relsync is built with.
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p relsync-benches --bin chart

work=$(mktemp -d -t relsync-bw.XXXXXX)
trap '"$root/scripts/nginx-origin.sh" stop "$work/nginx"; rm -rf "$work"' EXIT
chmod 755 "$work"  # nginx workers run unprivileged
# A copy of the binaries, so a rebuild during the run cannot mix versions.
target=${CARGO_TARGET_DIR:-$root/target}
mkdir "$work/bin" && cp "$target"/release/{relsync,cdn-publisher,chart} "$work/bin/"
PATH=$tools/bin:$PATH python3 "$here/bandwidth.py" "${quick[@]}" --root "$root" \
  --bin "$work/bin" --releases "$releases" --tool-cache "$HOME/.cache/relsync-tools-results" \
  --work "$work" --out "${RESULTS:-$here/results}" --port "${RELSYNC_BENCH_PORT:-18090}" \
  --revision "$revision"
