#!/usr/bin/env bash
# Publish throughput to an origin folder and to an S3 bucket (s3s-fs on loopback), side by side
# in one run: `cdn-publisher push` (release build) of MIB MiB of pseudo-random data in 10 MiB
# files, then of a second release (4 KiB rewritten in each of two files, one 10 MiB file
# added), then of the second again (a no-op). Prints a markdown table from each push's --json
# summary; a fresh install through nginx in front of the bucket is diffed with the release.
#
#   benches/publish-s3.sh [MIB]      # default 200
#
# $PUSH_FLAGS go to every push (default `--level 3`: at the default level 19, compression takes
# nearly all the time and hides the origin). Needs nginx and s3s-fs (scripts/setup.sh; or
# $RELSYNC_S3S_FS). Binaries are built in $CARGO_TARGET_DIR (default target/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mib=${1:-200}
read -ra flags <<<"${PUSH_FLAGS---level 3}"
"$root/scripts/setup.sh"
s3s=${RELSYNC_S3S_FS:-$(command -v s3s-fs || echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs")}
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher
bin=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d -t relsync-publish-s3.XXXXXX)
pids=()
cleanup() {
  "$root/scripts/nginx-origin.sh" stop "$work/nginx"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2; exit 1
}

# Two releases: v2 rewrites 4 KiB in the middle of each of 2 files of v1 and adds a file.
python3 - "$work" "$mib" <<'PY'
import os, random, sys
work, mib = sys.argv[1], int(sys.argv[2])
files = max(1, mib // 10)
for version in (1, 2):
    d = os.path.join(work, f"v{version}")
    os.makedirs(d)
    for i in range(files + (version == 2)):
        data = bytearray(random.Random(i).randbytes(10 << 20))
        if version == 2 and i < 2:
            data[5 << 20:(5 << 20) + 4096] = random.Random(f"edit-{i}").randbytes(4096)
        with open(os.path.join(d, f"file-{i:03}.bin"), "wb") as f:
            f.write(data)
PY

# s3s-fs: one process checks the publisher's signatures, the other answers the anonymous
# GETs of nginx (s3s-fs does not do both); both serve the same folder.
mkdir -p "$work/s3/bench"
signed=$(free_port) public=$(free_port) cdn=$(free_port)
"$s3s" --host 127.0.0.1 --port "$signed" --access-key bench --secret-key bench-secret \
  "$work/s3" >"$work/s3-signed.log" 2>&1 &
pids+=($!)
"$s3s" --host 127.0.0.1 --port "$public" "$work/s3" >"$work/s3-public.log" 2>&1 &
pids+=($!)
wait_port "$signed"
wait_port "$public"
"$root/scripts/nginx-origin.sh" proxy "http://127.0.0.1:$public/bench/rel/" "$work/nginx" "$cdn"
export AWS_ENDPOINT_URL=http://127.0.0.1:$signed AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true

"$bin/cdn-publisher" keygen --out "$work/key" >/dev/null
key=$(cat "$work/key.pub")
row() {
  python3 - "$@" <<'PY'
import json, sys
origin, release, s = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print(f"| {origin} | {release} | {s['bytes'] / 1e6:.0f} MB | {s['seconds']:.1f} | "
      f"{s['mb_per_s']:.1f} | {s['objects_written']} ({s['objects_present']}) | "
      f"{s['bytes_uploaded'] / 1e6:.1f} MB | {s['upload_seconds']:.1f} | "
      f"{s['upload_mb_per_s']:.1f} |")
PY
}
echo "| origin | release | release bytes | push s | push MB/s | objects written (already there) | bytes written | upload busy s | upload MB/s |"
echo "|---|---|---|---|---|---|---|---|---|"
for step in "v1 1.0.0" "v2 2.0.0" "v2 2.0.0"; do
  read -r tree version <<<"$step"
  for origin in "$work/origin" s3://bench/rel; do
    out=$("$bin/cdn-publisher" push "$work/$tree" --version "$version" --channel stable \
      --key "$work/key" --to "$origin" --json "${flags[@]}")
    label=folder
    [[ $origin == s3://* ]] && label=s3
    row "$label" "$version" "$out"
  done
done
"$bin/relsync" update --origin "http://127.0.0.1:$cdn/" --channel stable --trust "$key" --product app \
  --install "$work/install" --json >/dev/null
diff -r --no-dereference "$work/v2" "$work/install/current/" >/dev/null
echo
echo "push flags: ${flags[*]:-(defaults)}; fresh install of 2.0.0 through nginx in front of"
echo "the bucket: identical to the release"
