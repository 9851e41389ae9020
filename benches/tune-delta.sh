#!/usr/bin/env bash
# Sweeps delta window / segment sizes on one release pair and prints update bytes and publish
# time per setting (folder origin; the client's byte count covers every object it reads).
#
#   benches/tune-delta.sh [NAME OLD NEW] [W/S ...]     (default: ruff 0.6.0 0.6.1, see below)
#
# Releases come from ../shared/bench/fetch-releases.sh in $RELEASES.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:-ruff} old=${2:-0.6.0} new=${3:-0.6.1}
shift $(($# < 3 ? $# : 3))
settings=("${@:-2048/512 4096/1024 4096/2048 8192/1024 8192/2048 16384/2048 16384/4096}")
releases=${RELEASES:-$HOME/.cache/relsync-releases}
SEQS="$name:$old,$new" bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher
bin=$root/target/release
work=$(mktemp -d -t relsync-tune.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$bin/cdn-publisher" keygen --out "$work/key" >/dev/null
key=$(cat "$work/key.pub")
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
echo "| window / segment (KiB) | update bytes | delta bytes | publish s |"
echo "|---|---|---|---|"
for setting in ${settings[*]}; do
  window=${setting%/*} segment=${setting#*/} channel=c$window-$segment
  "$bin/cdn-publisher" push "$releases/$name-$old" --version "$old" --channel "$channel" \
    --key "$work/key" --to "$work/origin" --level 3 --solid-mib 0 >/dev/null
  "$bin/relsync" update --origin "$work/origin" --channel "$channel" --trust "$key" \
    --install "$work/i-$channel" --json >/dev/null
  push=$("$bin/cdn-publisher" push "$releases/$name-$new" --version "$new" --channel "$channel" \
    --key "$work/key" --to "$work/origin" --solid-mib 0 --json \
    --delta-window-kib "$window" --delta-segment-kib "$segment")
  update=$("$bin/relsync" update --origin "$work/origin" --channel "$channel" --trust "$key" \
    --install "$work/i-$channel" --json)
  printf '| %s / %s | %s | %s | %.1f |\n' "$window" "$segment" "$(field bytes_downloaded <<<"$update")" \
    "$(field delta_bytes <<<"$push")" "$(field seconds <<<"$push")"
done
