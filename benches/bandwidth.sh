#!/usr/bin/env bash
# Bandwidth harness: publish real release sequences (../shared/bench) and a synthetic one to an
# origin served by nginx on 127.0.0.1, update or install each scenario with `relsync update`, and
# run the other tools on the same release pairs, side by side.
#
#   benches/bandwidth.sh            everything (~17 min on 2 cores, mostly zstd -19 in the pushes;
#                                   ~20 min more while the other tools' results are not cached;
#                                   Zucchini takes ~30 s and HDiffPatch ~7 s per ruff pair)
#   benches/bandwidth.sh --quick    ruff 0.6.0->0.6.1 and the synthetic set only (~3 min;
#                                   ~4 min more while the other tools' results are not cached)
#
# relsync, per scenario: bytes on the wire and requests (from nginx's access log, checked against
# the client's count) and the request bound, wall time, client CPU time and peak RSS; every
# installed tree is diffed with its release. The other tools run on tars of the releases: the
# full download (zstd -19 --long=31 of the new tar), zstd --patch-from, bsdiff 4.3 and xdelta3
# -9 -S djw (patch sizes), HDiffPatch (PyPI hdiffpatch 2.6.0, lzma level 9, 2^27 window) and
# Zucchini + xz (crate zucchini 0.1.1 through benches/zucchini, its patch compressed with
# xz -9e; both patches are applied back and compared, or the cell shows —), and casync (64 KiB
# chunks, zstd), bita (64 KiB, brotli 11) and zsync, whose clients fetch from the same nginx
# with the old tar as seed (bytes from nginx's log). Their results are cached in
# ~/.cache/relsync-tools-results by tool version, how it is run and the tars' hashes; relsync is
# measured on every run. A tool that is not installed shows "—", and the table's note says why.
# Targets (issue 20), marked PASS or FAIL: previous->new ≤ Zucchini + xz, and on numpy also
# ≤ bsdiff; k behind ≤ 1.1× bsdiff from the client's release to the new one and ≤ full; fresh
# install ≤ 1.02× full; client peak RSS ≤ 64 MiB; requests ≤ the bound; each push at the
# defaults ≤ 20 s. "?" where a tool the target names did not run.
#
# Scenarios, each sequence on its own channel pushed at the defaults (delta frames against up
# to 4 earlier releases): previous->new for each consecutive pair; k behind, for k = 2, 3, 4
# where the sequence is long enough: a client installed at the release k before the newest updates to the
# newest (ruff 0.6.1->0.6.3 and 0.6.0->0.6.3, numpy 2.1.0->2.1.2, synthetic 1->3); a fresh
# install of each newest release. The synthetic app is scripts/make-demo-release.py v1-v3.
#
#   SEQUENCES="ruff:0.6.0,0.6.1,0.6.2 synthetic:3" benches/bandwidth.sh
#                                   only these sequences (ruff and numpy: the versions listed;
#                                   synthetic:N: versions 1..N), each pushed with the defaults
#                                   and measured like the others, k-behind rows included (it
#                                   overrides --quick)
#
# Installs what is missing: nginx and zstd (scripts/setup.sh), GNU time, bsdiff, xdelta3,
# casync, zsync, xz and clang-19 with apt-get; bita 0.15.0 with cargo install into
# ~/.cache/relsync-tools (~9 min on 2 cores); hdiffpatch 2.6.0 with pip into a virtualenv there,
# ~/.cache/relsync-tools/hdiffpatch-venv; benches/zucchini (relsync-zucchini, a separate cargo
# project, so that the workspace takes no C++ build dependency) with cargo install and
# CXX=clang++-19 into ~/.cache/relsync-tools (~2 min). Prints markdown tables; writes them to
# RESULTS/bandwidth.md with the charts as images (paths relative to docs/, for
# docs/benchmarks.md), the raw numbers to RESULTS/bandwidth.json and a chart per sequence to
# RESULTS/bandwidth-<sequence>.svg (benches/src/bin/chart.rs).
# Env: RELEASES (default ~/.cache/relsync-releases), RESULTS (default benches/results),
# RELSYNC_BENCH_PORT (default 18090), CARGO_TARGET_DIR (where the binaries are built),
# SEQUENCES (above).
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
tools=$HOME/.cache/relsync-tools bita_version=0.15.0 hdiffpatch_version=2.6.0
# benches/zucchini's version: bump it there and here when changing the runner, to rebuild it.
zucchini_version="relsync-zucchini 0.1.0, zucchini 0.1.1"
need=()
[[ -x /usr/bin/time ]] || need+=(time)
for tool in bsdiff xdelta3 casync zsync; do command -v $tool >/dev/null || need+=($tool); done
command -v xz >/dev/null || need+=(xz-utils)
have_bita() { [[ $("$tools/bin/bita" --version 2>/dev/null) == "bita $bita_version" ]]; }
if ! have_bita; then  # cargo builds bita against OpenSSL
  command -v pkg-config >/dev/null || need+=(pkg-config)
  dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
fi
hdiffpatch=("$tools/hdiffpatch-venv/bin/python" "$here/hdiffpatch-tool.py")
have_hdiffpatch() { [[ $("${hdiffpatch[@]}" --version 2>/dev/null) == "hdiffpatch $hdiffpatch_version" ]]; }
have_zucchini() { [[ $("$tools/bin/relsync-zucchini" --version 2>/dev/null) == "$zucchini_version" ]]; }
if ! have_zucchini; then  # Zucchini's Chromium sources build with clang only
  command -v clang++-19 >/dev/null || need+=(clang-19)
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
# Why a tool is missing, for the table's note (benches/bandwidth.py reads unavailable/<exe>).
mkdir -p "$tools/unavailable"
if ! have_hdiffpatch; then
  echo "installing hdiffpatch $hdiffpatch_version into $tools/hdiffpatch-venv (pip) ..." >&2
  rm -rf "$tools/hdiffpatch-venv"
  { python3 -m venv "$tools/hdiffpatch-venv" &&
    "$tools/hdiffpatch-venv/bin/pip" install -q "hdiffpatch==$hdiffpatch_version"; } >&2 ||
    echo "warning: could not install hdiffpatch; its column shows —" >&2
fi
if have_hdiffpatch; then
  rm -f "$tools/unavailable/relsync-hdiffpatch"
else
  echo "pip could not install hdiffpatch $hdiffpatch_version for $(python3 --version)" \
    >"$tools/unavailable/relsync-hdiffpatch"
fi
if ! have_zucchini; then
  echo "building benches/zucchini into $tools (cargo install, CXX=clang++-19, ~2 min) ..." >&2
  if ! command -v clang++-19 >/dev/null; then
    echo "Zucchini not built: clang++-19 is missing (apt-get install clang-19 failed)" \
      >"$tools/unavailable/relsync-zucchini"
  elif CXX=clang++-19 CARGO_TARGET_DIR="$tools/zucchini-target" cargo install --quiet --locked \
    --root "$tools" --path "$here/zucchini" 2>"$tools/zucchini-build.log"; then
    rm -rf "$tools/zucchini-target" "$tools/unavailable/relsync-zucchini"
  else
    echo "Zucchini not built: cargo install of benches/zucchini failed" \
      "($(grep -m1 -E '^error' "$tools/zucchini-build.log" || tail -1 "$tools/zucchini-build.log"))" \
      >"$tools/unavailable/relsync-zucchini"
    echo "warning: could not build benches/zucchini ($tools/zucchini-build.log);" \
      "its column shows —" >&2
  fi
fi

releases=${RELEASES:-$HOME/.cache/relsync-releases}
sequences=()
if [[ -n ${SEQUENCES:-} ]]; then
  sequences=(--sequences "$SEQUENCES")
  seqs=$(tr ' ' '\n' <<<"$SEQUENCES" | grep -v '^synthetic:' | paste -sd' ' - || true)
elif ((${#quick[@]})); then
  seqs="ruff:0.6.0,0.6.1"
else
  seqs="ruff:0.6.0,0.6.1,0.6.2,0.6.3 numpy:2.1.0,2.1.1,2.1.2"
fi
[[ -z $seqs ]] || SEQS=$seqs bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2
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
# HDiffPatch runs as relsync-hdiffpatch: this checkout's runner in the virtualenv's Python.
if have_hdiffpatch; then
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "${hdiffpatch[@]}" >"$work/bin/relsync-hdiffpatch"
  chmod +x "$work/bin/relsync-hdiffpatch"
fi
PATH=$work/bin:$tools/bin:$PATH python3 "$here/bandwidth.py" "${quick[@]}" "${sequences[@]}" \
  --root "$root" --tools "$tools" --bin "$work/bin" --releases "$releases" \
  --tool-cache "$HOME/.cache/relsync-tools-results" \
  --work "$work" --out "${RESULTS:-$here/results}" --port "${RELSYNC_BENCH_PORT:-18090}" \
  --revision "$revision"
