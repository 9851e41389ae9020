#!/usr/bin/env bash
# Bandwidth harness: publish real release sequences (../shared/bench) and a synthetic one to an
# origin served by nginx on 127.0.0.1, and measure relsync end to end per scenario: bytes on
# the wire and requests (from nginx's access log, checked against the client's count), wall
# time, client peak RSS, and the request bound; every installed tree is diffed with its release.
#
#   benches/bandwidth.sh            everything (~17 min on 2 cores, mostly zstd -19 in the pushes)
#   benches/bandwidth.sh --quick    ruff 0.6.0->0.6.1 and the synthetic set only (~3 min)
#
# Scenarios, each sequence on its own channel: previous->new for each consecutive pair,
# older->new (0.6.0->0.6.2, 2.1.0->2.1.2) on a channel pushed with --delta-from 2, a fresh
# install of each newest release, and the synthetic app (scripts/make-demo-release.py v1-v3).
# Prints markdown tables; writes them to benches/results/bandwidth.md, the raw numbers to
# bandwidth.json and a chart to bandwidth.png (when matplotlib can be installed).
# Env: RELEASES (default ~/.cache/relsync-releases), RELSYNC_BENCH_PORT (default 18090).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
quick=()
case ${1:-} in
  "") ;;
  --quick) quick=(--quick) ;;
  -h | --help) sed -n '2,15s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "usage: benches/bandwidth.sh [--quick]" >&2; exit 2 ;;
esac

# Dependencies: nginx and zstd (setup.sh), GNU time for peak RSS, matplotlib for the chart.
"$root/scripts/setup.sh"
if [[ ! -x /usr/bin/time ]]; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq time >/dev/null
fi
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib >&2 ||
  echo "warning: could not install matplotlib; no chart will be drawn" >&2

releases=${RELEASES:-$HOME/.cache/relsync-releases}
if ((${#quick[@]})); then seqs="ruff:0.6.0,0.6.1"; else seqs="ruff:0.6.0,0.6.1,0.6.2,0.6.3 numpy:2.1.0,2.1.1,2.1.2"; fi
SEQS=$seqs bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2
# What is measured: the commit, plus any uncommitted changes outside benches/.
dirty=$(git -C "$root" status --porcelain -- . ':!benches' 2>/dev/null | cut -c4- | paste -sd, - | sed 's/,/, /g')
revision="commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)${dirty:+ with uncommitted changes to $dirty}"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher

work=$(mktemp -d -t relsync-bw.XXXXXX)
trap '"$root/scripts/nginx-origin.sh" stop "$work/nginx"; rm -rf "$work"' EXIT
chmod 755 "$work"  # nginx workers run unprivileged
# A copy of the binaries, so a rebuild during the run cannot mix versions.
mkdir "$work/bin" && cp "$root/target/release/relsync" "$root/target/release/cdn-publisher" "$work/bin/"
python3 "$here/bandwidth.py" "${quick[@]}" --root "$root" --bin "$work/bin" \
  --releases "$releases" --anchors "$root/../shared/bench/ANCHORS.md" --work "$work" \
  --out "$here/results" --port "${RELSYNC_BENCH_PORT:-18090}" \
  --revision "$revision"
