#!/usr/bin/env bash
# nginx-origin.sh start ORIGIN_DIR WORK_DIR PORT  |  nginx-origin.sh proxy URL WORK_DIR PORT
#   |  nginx-origin.sh stop WORK_DIR
# Serves ORIGIN_DIR on 127.0.0.1:PORT with an access log of body bytes sent per request, and
# the headers a bucket origin gets from the publisher: application/octet-stream, channel
# pointers cached for 60 s, everything else (content-addressed) immutable. With
# `proxy`, serves URL instead (a bucket's path-style URL, e.g.
# http://127.0.0.1:9000/bucket/prefix/), as a CDN in front of an object store: GET and HEAD
# only.
set -euo pipefail
cmd=$1
if [[ $cmd == start || $cmd == proxy ]]; then
  work=$(realpath -m "$3"); port=$4
  if [[ $cmd == start ]]; then
    serve="root $(realpath "$2"); types {} default_type application/octet-stream;
    location /channels/ { add_header Cache-Control 'public, max-age=60'; }
    location / { add_header Cache-Control 'public, max-age=31536000, immutable'; }"
  else
    serve="location / { limit_except GET { deny all; } proxy_pass $2; }"
  fi
  mkdir -p "$work/tmp"
  cat >"$work/nginx.conf" <<CONF
daemon on;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 256; }
http {
  log_format bytes '\$status \$body_bytes_sent "\$request" "\$http_range"';
  access_log $work/access.log bytes;
  client_body_temp_path $work/tmp; proxy_temp_path $work/tmp; fastcgi_temp_path $work/tmp;
  uwsgi_temp_path $work/tmp; scgi_temp_path $work/tmp;
  sendfile on;
  server { listen 127.0.0.1:$port; $serve }
}
CONF
  nginx=$(command -v nginx || echo /usr/sbin/nginx)
  "$nginx" -c "$work/nginx.conf" -p "$work" -e "$work/error.log"
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && exit 0
    sleep 0.1
  done
  echo "nginx did not start; see $work/error.log" >&2; exit 1
elif [[ $cmd == stop ]]; then
  work=$2
  [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
fi
