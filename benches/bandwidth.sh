#!/usr/bin/env bash
# Bandwidth harness: publish release pairs, serve the origin with nginx on 127.0.0.1, and
# measure what relsync downloads (counted by the client, checked against nginx's access log)
# for an update and for a fresh install, next to a full `zstd -19 --long=31` download.
#
#   benches/bandwidth.sh [PAIR ...]    PAIR = name:old:new   (default: ruff:0.6.0:0.6.1)
#
# Releases come from ../shared/bench/fetch-releases.sh (cached in $RELEASES, default
# ~/.cache/relsync-releases). Prints a markdown table on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
"$root/scripts/setup.sh"
releases=${RELEASES:-$HOME/.cache/relsync-releases}
pairs=("${@:-ruff:0.6.0:0.6.1}")
PUSH_FLAGS=${PUSH_FLAGS:-}  # extra flags for the new release's push, e.g. "--delta-window-kib 8192"
port=${RELSYNC_BENCH_PORT:-18090}
work=$(mktemp -d -t relsync-bw.XXXXXX)
trap '"$root/scripts/nginx-origin.sh" stop "$work/nginx"; rm -rf "$work"' EXIT
chmod 755 "$work"  # nginx workers run unprivileged

seqs=""
for pair in "${pairs[@]}"; do
  IFS=: read -r name old new <<<"$pair"
  seqs+=" $name:$old,$new"
done
SEQS="${seqs# }" bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2

cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher
bin=$root/target/release
"$bin/cdn-publisher" keygen --out "$work/key" >/dev/null
key=$(cat "$work/key.pub")
mkdir -p "$work/origin"
"$root/scripts/nginx-origin.sh" start "$work/origin" "$work/nginx" "$port"
url=http://127.0.0.1:$port/
log=$work/nginx/access.log

# Bytes nginx sent since line $1 of its log.
sent_since() { tail -n +"$(($1 + 1))" "$log" | awk '{ s += $2 } END { print s + 0 }'; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
mb() { python3 -c "print(f'{$1/1e6:.2f} MB')"; }
pct() { python3 -c "print(f'{100*$1/$2:.1f}%')"; }

echo "| pair | full zstd -19 --long | relsync update | relsync fresh install | update requests | update wall | publish MB/s (with deltas) |"
echo "|---|---|---|---|---|---|---|"
for pair in "${pairs[@]}"; do
  IFS=: read -r name old new <<<"$pair"
  full=$(zstd -19 --long=31 -T1 -c -q "$releases/$name-$new.tar" | wc -c)
  channel=$name
  "$bin/cdn-publisher" push "$releases/$name-$old" --version "$old" --channel "$channel" \
    --key "$work/key" --to "$work/origin" >/dev/null
  "$bin/relsync" update --origin "$url" --channel "$channel" --trust "$key" \
    --install "$work/inst-$name" --json >/dev/null
  publish=$("$bin/cdn-publisher" push "$releases/$name-$new" --version "$new" --channel "$channel" \
    --key "$work/key" --to "$work/origin" --json $PUSH_FLAGS | field mb_per_s)
  mark=$(wc -l <"$log")
  report=$("$bin/relsync" update --origin "$url" --channel "$channel" --trust "$key" \
    --install "$work/inst-$name" --json)
  update=$(field bytes_downloaded <<<"$report")
  requests=$(field requests <<<"$report")
  wall=$(field duration_ms <<<"$report")
  [[ $update == "$(sent_since "$mark")" ]] || { echo "client count $update != nginx $(sent_since "$mark")" >&2; exit 1; }
  diff -r "$work/inst-$name/current" "$releases/$name-$new" >/dev/null
  mark=$(wc -l <"$log")
  fresh=$("$bin/relsync" update --origin "$url" --channel "$channel" --trust "$key" \
    --install "$work/fresh-$name" --json | field bytes_downloaded)
  [[ $fresh == "$(sent_since "$mark")" ]] || { echo "client count $fresh != nginx" >&2; exit 1; }
  printf '| %s %s->%s | %s | %s (%s) | %s (%s) | %s | %s ms | %.1f |\n' "$name" "$old" "$new" \
    "$(mb "$full")" "$(mb "$update")" "$(pct "$update" "$full")" \
    "$(mb "$fresh")" "$(pct "$fresh" "$full")" "$requests" "$wall" "$publish"
done
