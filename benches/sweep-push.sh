#!/usr/bin/env bash
# Sweeps `cdn-publisher push` settings on one release pair: for each setting, push OLD (level 3,
# no solid frames: only its bytes matter), install it, push NEW with the setting, update, and
# print publish time and update bytes (folder origin; the client's byte count covers every
# object it reads, pointer and manifest included). Every installed tree is diffed with NEW.
#
#   benches/sweep-push.sh [NAME OLD NEW] ["PUSH FLAGS" ...]
#
# Default: ruff 0.6.2 0.6.3, with the defaults and the faster settings of docs/benchmarks.md.
# Delta window tuning, for example:
#   benches/sweep-push.sh ruff 0.6.0 0.6.1 "--delta-window-kib 4096 --delta-segment-kib 1024"
# Releases come from ../shared/bench/fetch-releases.sh in $RELEASES; binaries are built in
# $CARGO_TARGET_DIR (default target/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:-ruff} old=${2:-0.6.2} new=${3:-0.6.3}
shift $(($# < 3 ? $# : 3))
if (($#)); then settings=("$@"); else
  settings=("" "--no-bsdiff" "--delta-level 9" "--level 9" "--level 9 --no-bsdiff" "--level 3 --no-bsdiff")
fi
releases=${RELEASES:-$HOME/.cache/relsync-releases}
SEQS="$name:$old,$new" bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher
bin=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d -t relsync-sweep.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin/cdn-publisher" keygen --out "$work/key" >/dev/null
key=$(cat "$work/key.pub")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
echo "| push flags | publish $name $new | update $old->$new bytes | delta frames (bsdiff) |"
echo "|---|---|---|---|"
n=0
for setting in "${settings[@]}"; do
  n=$((n + 1)) channel=c$n
  read -ra flags <<<"$setting"
  "$bin/cdn-publisher" push "$releases/$name-$old" --version "$old" --channel "$channel" \
    --key "$work/key" --to "$work/origin" --level 3 --solid-mib 0 >/dev/null
  "$bin/relsync" update --origin "$work/origin" --channel "$channel" --trust "$key" --product app \
    --install "$work/i-$channel" --json >/dev/null
  push=$("$bin/cdn-publisher" push "$releases/$name-$new" --version "$new" --channel "$channel" \
    --key "$work/key" --to "$work/origin" --json "${flags[@]}")
  update=$("$bin/relsync" update --origin "$work/origin" --channel "$channel" --trust "$key" --product app \
    --install "$work/i-$channel" --json)
  diff -r --no-dereference "$releases/$name-$new" "$work/i-$channel/current/" >/dev/null
  printf '| %s | %.1f s, %.2f MB/s | %s | %s (%s) |\n' "${setting:-(defaults)}" \
    "$(field seconds <<<"$push")" "$(field mb_per_s <<<"$push")" \
    "$(field bytes_downloaded <<<"$update")" "$(field delta_frames <<<"$push")" \
    "$(field bsdiff_frames <<<"$push")"
done
