#!/usr/bin/env bash
# Runs deploy/nginx/chatbot.conf in front of two local chatbot-server
# instances (target/debug/chatbot-server, as `cargo test` builds it) that share
# the local Redis and one SQLite user file, and checks through nginx that
# register, login and a streamed chat over a WebSocket work, and that both
# instances served requests. nginx runs with its own prefix, pid and logs in a
# temporary directory, never the system's. Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${CHATBOT_BIN:-${CARGO_TARGET_DIR:-target}/debug/chatbot-server}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
CONF=deploy/nginx/chatbot.conf
WEBSOCKETS_VERSION=15.0.1

say() { echo "nginx-check: $*"; }

[ -x "$BIN" ] || { say "FAILED: $BIN is not built (cargo test builds it)"; exit 1; }
redis-cli -u "$REDIS_URL" ping >/dev/null 2>&1 || { say "FAILED: no Redis at $REDIS_URL"; exit 1; }

NGINX="$(command -v nginx || true)"
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ]; then
  say "installing nginx (apt-get)"
  # The package must not start the system's nginx (on port 80).
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q nginx >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q nginx >/dev/null; }
  [ -n "$made_policy" ] && rm -f "$policy"
  NGINX=/usr/sbin/nginx
fi
if ! python3 -c 'import websockets.sync.client' >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check "websockets==$WEBSOCKETS_VERSION"
fi

work="$(mktemp -d)"
prefix="nginxcheck-$$-$RANDOM"
pids=()
cleanup() {
  local code=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$code" -ne 0 ]; then
    for log in "$work"/instance-*.log "$work"/nginx/error.log; do
      [ -f "$log" ] && { echo "--- $log"; tail -n 30 "$log"; }
    done
  fi
  redis-cli -u "$REDIS_URL" --scan --pattern "$prefix:*" | xargs -r redis-cli -u "$REDIS_URL" del >/dev/null 2>&1 || true
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

secret="$(head -c 48 /dev/urandom | base64 | tr -d '\n')"
ports=()
for i in 1 2; do
  port="$(free_port)"
  ports+=("$port")
  env -i PATH="$PATH" HOST=127.0.0.1 PORT="$port" JWT_SECRET="$secret" \
    REDIS_URL="$REDIS_URL" REDIS_KEY_PREFIX="$prefix" SQLITE_PATH="$work/users.db" \
    TRUSTED_PROXIES=127.0.0.1 ECHO_TOKEN_DELAY=5ms RUST_LOG=info \
    "$BIN" >"$work/instance-$i.log" 2>&1 &
  pids+=("$!")
done
for port in "${ports[@]}"; do
  for _ in $(seq 1 100); do
    "$BIN" healthcheck --port "$port" --host 127.0.0.1 >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$BIN" healthcheck --port "$port" --host 127.0.0.1 || { say "FAILED: instance on $port did not start"; exit 1; }
done

# The deploy config, its upstream servers and listener swapped for local ones.
ngx_port="$(free_port)"
mkdir -p "$work/nginx"
awk -v a="127.0.0.1:${ports[0]}" -v b="127.0.0.1:${ports[1]}" -v listen="127.0.0.1:$ngx_port" '
  /^[ \t]*server gateway[0-9]+:3001/ { if (!done++) { print "    server " a ";"; print "    server " b ";" } ; next }
  /^[ \t]*listen 80;/ { print "    listen " listen ";"; next }
  { print }
' "$CONF" >"$work/nginx/chatbot.conf"
grep -q "server 127.0.0.1:${ports[1]};" "$work/nginx/chatbot.conf" && grep -q "listen 127.0.0.1:$ngx_port;" "$work/nginx/chatbot.conf" \
  || { say "FAILED: $CONF no longer has the 'server gatewayN:3001' and 'listen 80;' lines this check replaces"; exit 1; }
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 256; }
http {
    log_format upstream '\$status \$request_method \$uri \$upstream_addr';
    access_log $work/nginx/access.log upstream;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    include $work/nginx/chatbot.conf;
}
CONF
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -t -q
# In the foreground of a background job, so its pid is ours to stop and reap.
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=("$!")
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$ngx_port") 2>/dev/null && break
  sleep 0.1
done
say "nginx on 127.0.0.1:$ngx_port in front of 127.0.0.1:${ports[0]} and 127.0.0.1:${ports[1]}"

python3 deploy/nginx-check.py "http://127.0.0.1:$ngx_port"

# The access log is written when a request ends; the WebSockets just closed.
sleep 0.2
for port in "${ports[@]}"; do
  served="$(grep -c " 127.0.0.1:$port\$" "$work/nginx/access.log" || true)"
  [ "$served" -gt 0 ] || { say "FAILED: the instance on $port served no request through nginx"; cat "$work/nginx/access.log"; exit 1; }
  say "ok: the instance on $port served $served requests"
done
ws="$(grep -c '^101 GET /ws ' "$work/nginx/access.log" || true)"
[ "$ws" -ge 2 ] || { say "FAILED: $ws WebSocket upgrades (101) went through nginx, expected 2"; exit 1; }
say "passed"
