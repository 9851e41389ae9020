#!/usr/bin/env bash
# The relsync demo: publish two releases of a demo app to an origin folder, serve it with nginx
# on 127.0.0.1, install v1 from it over HTTP, update to v2, and show what went over the wire.
#
#   scripts/demo.sh [WORK_DIR]     (default: a new temporary directory)
#
# RELSYNC_BIN=DIR runs the `relsync` and `cdn-publisher` already in DIR (e.g. release binaries
# built elsewhere) and skips the build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
work=${1:-$(mktemp -d -t relsync-demo.XXXXXX)}
mkdir -p "$work"
work=$(realpath "$work")
chmod 755 "$work"  # nginx workers run unprivileged
port=${RELSYNC_DEMO_PORT:-18080}

if [[ -n ${RELSYNC_BIN:-} ]]; then
  bin=$(realpath "$RELSYNC_BIN")
  for b in relsync cdn-publisher; do
    [[ -x $bin/$b ]] || { echo "RELSYNC_BIN=$RELSYNC_BIN: no executable $b there" >&2; exit 1; }
  done
  command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] \
    || { echo "nginx is required (scripts/setup.sh installs it)" >&2; exit 1; }
  echo "== using the binaries in $bin (RELSYNC_BIN)" >&2
else
  "$here/setup.sh"
  echo "== building" >&2
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync --bin cdn-publisher
  # Where cargo put them: CARGO_TARGET_DIR if the user sets one.
  bin=${CARGO_TARGET_DIR:-$root/target}/release
fi
trap '"$here/nginx-origin.sh" stop "$work/nginx"' EXIT

echo "== generating demo releases v1 and v2 in $work" >&2
rm -rf "$work/app-1" "$work/app-2" "$work/origin" "$work/install" "$work/nginx"
python3 "$here/make-demo-release.py" "$work/app-1" 1
python3 "$here/make-demo-release.py" "$work/app-2" 2

echo "== cdn-publisher keygen" >&2
[[ -f $work/demo.key ]] || "$bin/cdn-publisher" keygen --out "$work/demo.key" >/dev/null
key=$(cat "$work/demo.key.pub")
echo "   trusted key: $key"

echo "== cdn-publisher push v1.0.0" >&2
"$bin/cdn-publisher" push "$work/app-1" --version 1.0.0 --channel stable --product demo-app --key "$work/demo.key" --to "$work/origin"

"$here/nginx-origin.sh" start "$work/origin" "$work/nginx" "$port"
url=http://127.0.0.1:$port/
echo "== nginx serves the origin at $url" >&2

echo "== relsync update (fresh install of v1)" >&2
"$bin/relsync" update --origin "$url" --channel stable --trust "$key" --product demo-app --install "$work/install" --no-mdns

echo "== cdn-publisher push v1.1.0" >&2
"$bin/cdn-publisher" push "$work/app-2" --version 1.1.0 --channel stable --product demo-app --key "$work/demo.key" --to "$work/origin"

echo "== relsync update (v1 -> v2: only the changed chunks)" >&2
"$bin/relsync" update --origin "$url" --channel stable --trust "$key" --product demo-app --install "$work/install" --no-mdns
diff -r "$work/install/current" "$work/app-2" && echo "   install/current is identical to the v2 tree"

echo "== relsync status" >&2
"$bin/relsync" status --install "$work/install"
sent=$(awk '{ s += $2 } END { print s }' "$work/nginx/access.log")
echo "   nginx sent $sent body bytes in $(wc -l <"$work/nginx/access.log") requests in total"
echo "== done: try 'relsync rollback --install $work/install'" >&2
