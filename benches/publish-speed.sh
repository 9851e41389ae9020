#!/usr/bin/env bash
# Publish speed on 1 and 2 cores with every delta base the defaults make, where the time goes,
# and the bytes clients download.
#
#   benches/publish-speed.sh [NAME VERSIONS] ["PUSH FLAGS"]
#
# Default: ruff 0.6.0,0.6.1,0.6.2,0.6.3. Pushes every version but the last to a folder origin
# (once, without delta frames: they do not change the last push's work) and installs each,
# then pushes the last onto a copy of that origin at the defaults (plus PUSH FLAGS) twice:
# pinned to one core (`taskset -c 0`, RAYON_NUM_THREADS=1) and to two (`taskset -c 0,1`,
# RAYON_NUM_THREADS=2). Prints, per run, the push's CPU seconds (user + system), its wall
# seconds and its `timings` (wall seconds per stage; seconds of each kind of work, summed over
# threads), then the bytes of an update to the last version from each earlier one and of a
# fresh install (`relsync update --json`; every installed tree is diffed with its release).
# Releases come from ../shared/bench/fetch-releases.sh in $RELEASES; binaries from $BIN
# (default: built in $CARGO_TARGET_DIR, default target/). REPEAT=n runs each pinned push n
# times (default 1); CPUS="0,1" runs only the 2-core push. WORK keeps the scratch origins
# there (default: a temporary directory).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
name=${1:-ruff} versions=${2:-0.6.0,0.6.1,0.6.2,0.6.3} flags=${3:-}
read -ra flags <<<"$flags"
IFS=, read -ra versions <<<"$versions"
new=${versions[-1]} olds=("${versions[@]:0:${#versions[@]}-1}")
releases=${RELEASES:-$HOME/.cache/relsync-releases}
SEQS="$name:$(IFS=,; echo "${versions[*]}")" bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2
if [[ -z ${BIN:-} ]]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher
  BIN=${CARGO_TARGET_DIR:-$root/target}/release
fi
if [[ -n ${WORK:-} ]]; then work=$WORK; mkdir -p "$work"; else
  work=$(mktemp -d -t relsync-speed.XXXXXX)
  trap 'rm -rf "$work"' EXIT
fi
pub=$BIN/cdn-publisher
[[ -f $work/key ]] || "$pub" keygen --out "$work/key" >/dev/null
key=$(cat "$work/key.pub")
client() { "$BIN/relsync" update --origin "$1" --channel c --trust "$key" --product app --install "$2" --json; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
summary() {
  python3 -c '
import json, sys
s = json.load(sys.stdin)
t = s["timings"]
stages = " ".join(f"{k} {v:.1f}" for k, v in t["stages"].items())
work = " ".join(f"{k} {v:.1f}" for k, v in sorted(t["work"].items(), key=lambda kv: -kv[1]) if v >= 0.05)
print("%.1f s | stages: %s | work: %s | delta frames %d (%d B), solid %d B, packs %d B" % (
    s["seconds"], stages, work, s["delta_frames"], s["delta_bytes"], s["solid_bytes"], s["pack_bytes"]))
'
}
rm -rf "$work/base" "$work"/i-*
for v in "${olds[@]}"; do
  "$pub" push "$releases/$name-$v" --version "$v" --channel c --key "$work/key" --to "$work/base" \
    --json --delta-from 0 "${flags[@]}" >/dev/null
  client "$work/base" "$work/i-$v" >/dev/null
done
for run in $(seq "${REPEAT:-1}"); do
  for cpus in ${CPUS:-0 0,1}; do
    rm -rf "$work/origin-$cpus" && cp -a "$work/base" "$work/origin-$cpus"
    threads=$(($(tr -cd , <<<"$cpus" | wc -c) + 1))
    printf '%s %s, %s core(s), run %s: ' "$name" "${versions[*]}" "$threads" "$run"
    RAYON_NUM_THREADS=$threads taskset -c "$cpus" /usr/bin/time -f '%U %S' -o "$work/cpu" \
      "$pub" push "$releases/$name-$new" --version "$new" --channel c --key "$work/key" \
      --to "$work/origin-$cpus" --json "${flags[@]}" >"$work/push-$cpus-$run.json"
    printf 'CPU %.1f s | ' "$(awk '{print $1 + $2}' "$work/cpu")"
    summary <"$work/push-$cpus-$run.json"
  done
done
last=${CPUS:-0 0,1}
origin=$work/origin-${last##* }
for v in "${olds[@]}"; do
  rm -rf "$work/u" && cp -a "$work/i-$v" "$work/u"
  bytes=$(client "$origin" "$work/u" | field bytes_downloaded)
  diff -r --no-dereference "$releases/$name-$new" "$work/u/current/" >/dev/null
  echo "bytes: update $name $v->$new $bytes"
done
rm -rf "$work/u"
fresh=$(client "$origin" "$work/u" | field bytes_downloaded)
diff -r --no-dereference "$releases/$name-$new" "$work/u/current/" >/dev/null
echo "bytes: fresh install $name $new $fresh"
