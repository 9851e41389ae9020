#!/usr/bin/env bash
# Requests to the origin and client CPU time of one numpy 2.1.0 -> 2.1.1 update, along each
# path an update takes:
#
#   update    `relsync update` (check, plan, fetch, install in one run)
#   api       examples' `dir-app`: Engine::check, then download, then install (what apps and
#             `relsync daemon` do)
#   slow      `relsync update` with pack responses throttled (nginx limit_rate 1 KiB/s) so the
#             fetch takes over a minute, and the withdrawal poll (every 30 s) runs meanwhile
#
#   benches/check-download.sh [BIN_DIR...]
#
# Each BIN_DIR holds relsync, cdn-publisher and dir-app (default: a release build of this
# tree). Every run starts from a copy of the same 2.1.0 install; nginx serves the origin on
# 127.0.0.1 and its access log gives the requests by kind (channel pointers, manifests or
# manifest deltas, root documents, pack ranges). CPU is the client's user + system time
# (GNU time). Prints one markdown row per BIN_DIR and path; RUNS (default 3) runs each (the
# slow path once), the median CPU time reported. Env: PATHS (default "update api slow"),
# RELEASES (default ~/.cache/relsync-releases), PORT (18095).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
"$root/scripts/setup.sh" >/dev/null
[[ -x /usr/bin/time ]] || { echo "check-download.sh: GNU time (/usr/bin/time) is required" >&2; exit 1; }
releases=${RELEASES:-$HOME/.cache/relsync-releases}
port=${PORT:-18095}
runs=${RUNS:-3}
SEQS="numpy:2.1.0,2.1.1" bash "$root/../shared/bench/fetch-releases.sh" "$releases" >&2
bins=("$@")
if ((${#bins[@]} == 0)); then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin relsync \
    --bin cdn-publisher --bin dir-app
  bins=("${CARGO_TARGET_DIR:-$root/target}/release")
fi

work=$(mktemp -d -t relsync-cd.XXXXXX)
chmod 755 "$work"  # nginx workers run unprivileged
stop_nginx() { [[ -f $work/nginx/nginx.pid ]] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; }
trap 'stop_nginx; rm -rf "$work"' EXIT

# nginx with the access log of nginx-origin.sh, and pack bodies optionally throttled.
start_nginx() {
  local limit=$1
  stop_nginx; sleep 0.2
  mkdir -p "$work/nginx/tmp"; : >"$work/nginx/access.log"
  cat >"$work/nginx/nginx.conf" <<CONF
daemon on;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  log_format bytes '\$status \$body_bytes_sent "\$request" "\$http_range"';
  access_log $work/nginx/access.log bytes;
  client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  server {
    listen 127.0.0.1:$port; root $work/origin; types {} default_type application/octet-stream;
    location /packs/ { limit_rate $limit; }
  }
}
CONF
  nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -e "$work/nginx/error.log"
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "nginx did not start" >&2; exit 1
}

# Requests by kind in the access log since line $1: "total pointer manifest root pack".
count() {
  tail -n +"$(($1 + 1))" "$work/nginx/access.log" | awk '
    { n++ } /\/channels\// { c++ } /\/manifests\// { m++ } /\/keys\// { k++ } /\/packs\// { p++ }
    END { printf "%d %d %d %d %d\n", n, c, m, k, p }'
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

url=http://127.0.0.1:$port/
pub=${bins[0]}/cdn-publisher
"$pub" keygen --out "$work/key" >/dev/null
key=$(cat "$work/key.pub")
push() { "$pub" push "$releases/numpy-$1" --version "$1" --channel stable --product numpy \
  --key "$work/key" --to "$work/origin" >/dev/null; }
push 2.1.0
start_nginx 0
"${bins[0]}/relsync" update --origin "$url" --trust "$key" --product numpy \
  --install "$work/v1" --no-mdns --json >/dev/null
push 2.1.1

echo "| binaries | path | requests | pointer | manifest | root | pack | client CPU s (median of $runs) |"
echo "|---|---|---|---|---|---|---|---|"
for bin in "${bins[@]}"; do
  for path in ${PATHS:-update api slow}; do
    if [[ $path == slow ]]; then start_nginx 1k; else start_nginx 0; fi
    cpus=()
    for run in $(seq "$runs"); do
      dir=$work/run-$run
      rm -rf "$dir"; cp -a "$work/v1" "$dir"
      mark=$(wc -l <"$work/nginx/access.log")
      case $path in
        update | slow)
          /usr/bin/time -f "%U %S" -o "$work/time" "$bin/relsync" update --origin "$url" \
            --trust "$key" --product numpy --install "$dir" --no-mdns --min-rate 0 --json \
            >"$work/out" ;;
        api)
          /usr/bin/time -f "%U %S" -o "$work/time" "$bin/dir-app" --origin "$url" \
            --trust "$key" --product numpy --install "$dir" >"$work/out" ;;
      esac
      diff -r "$dir/current" "$releases/numpy-2.1.1" >/dev/null ||
        { echo "$path: $dir/current differs from numpy 2.1.1" >&2; exit 1; }
      cpus+=("$(awk '{ print $1 + $2 }' "$work/time")")
      counts=$(count "$mark")
      # The slow path takes minutes: one run.
      [[ $path == slow ]] && break
    done
    read -r total pointer manifest keys pack <<<"$counts"
    cpu=$(printf '%s\n' "${cpus[@]}" | median)
    echo "| $bin | $path | $total | $pointer | $manifest | $keys | $pack | $cpu |"
  done
done
