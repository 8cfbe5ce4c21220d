#!/usr/bin/env bash
# The customer chat (/) and the agent console (/agent) end to end in headless
# Chromium: e2e/handoff.test.mjs drives Debian's chromium with playwright-core
# (pinned in e2e/package-lock.json; never a browser download) against three
# servers of the debug binary with the echo model and in-memory stores (Redis
# with E2E_REDIS_URL): the default handoff, auto-assignment to two agents,
# and office hours that are closed. Called by .ci/run; needs node >= 20 and npm.
#
# Failures leave screenshots and page HTML in e2e/artifacts/; success writes
# docs/screenshots/customer.png and agent.png, the README's pictures.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
BIN="${CHATBOT_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/chatbot-server}"
ARTIFACTS="$PWD/e2e/artifacts"

if [ ! -x "$CHROMIUM" ]; then
  echo "e2e: installing Debian's chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "e2e: node >= 20 is required (playwright-core)" >&2; exit 1; }

cargo build --quiet
(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)

work="$(mktemp -d)"
server_pids=()
stop_servers() {
  for pid in "${server_pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap stop_servers EXIT INT TERM

agent_password="agent-password-e2e"

# Starts a server named $1 with its own users and port, the extra settings
# after it, and makes agents of the accounts in $AGENTS (space-separated);
# sets $base to its URL.
serve() {
  local name="$1"; shift
  local dir="$work/$name"
  mkdir -p "$dir"
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  base="http://127.0.0.1:$port"
  # The server's whole configuration, shared with the `users set-role` command.
  # Answers come one word every 150 ms, slow enough to reload in the middle.
  local config=(
    PATH="$PATH" HOME="$dir" HOST=127.0.0.1 PORT="$port" RUST_LOG=warn
    JWT_SECRET="e2e-ci-secret-0123456789abcdef0123456789"
    SQLITE_PATH="$dir/users.db" ECHO_TOKEN_DELAY=150ms "$@"
  )
  if [ -n "${E2E_REDIS_URL:-}" ]; then
    # Each server its own keys on the shared Redis.
    config+=(REDIS_URL="$E2E_REDIS_URL" REDIS_KEY_PREFIX="e2e-$name-$$")
  fi
  (cd "$dir" && exec env -i "${config[@]}" "$BIN") >"$dir/server.log" 2>&1 &
  server_pids+=($!)
  local pid=$!
  for _ in $(seq 1 100); do
    curl -fsS "$base/health" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    sleep 0.1
  done
  curl -fsS "$base/health" >/dev/null
  # Agents: an ordinary registration, then the operator's command.
  local agent
  for agent in ${AGENTS:-}; do
    curl -fsS -o /dev/null -X POST "$base/api/auth/register" -H 'content-type: application/json' \
      -d "{\"username\":\"$agent\",\"email\":\"$agent@example.com\",\"password\":\"$agent_password\"}"
    (cd "$dir" && env -i "${config[@]}" "$BIN" users set-role "$agent" agent >/dev/null)
  done
}

agent_user=Ann
AGENTS="$agent_user" serve main
main_base="$base"
# Conversations go to agents by themselves, two each at most.
AGENTS="Ann Bea" serve auto HANDOFF=on HANDOFF_WHEN_NO_AGENT_ONLINE=queue \
  HANDOFF_ASSIGN=auto AGENT_MAX_CONVERSATIONS=2
auto_base="$base"
# Open one minute a day, twelve hours from now: closed while this runs.
opens="$(date -u -d '+12 hours' +%H:%M)"
closes="$(date -u -d '+12 hours 1 minute' +%H:%M)"
[ "$closes" = "00:00" ] && closes="24:00"
AGENTS="" serve closed HANDOFF=on HANDOFF_HOURS="Mon-Sun $opens-$closes" \
  HANDOFF_CLOSED_MESSAGE="Our team is away right now."
closed_base="$base"

rm -rf "$ARTIFACTS"
status=0
BASE_URL="$main_base" AGENT_USER="$agent_user" AGENT_PASSWORD="$agent_password" \
  AUTO_BASE_URL="$auto_base" AUTO_AGENTS="Ann,Bea" CLOSED_BASE_URL="$closed_base" \
  CHROMIUM="$CHROMIUM" ARTIFACTS="$ARTIFACTS" SCREENSHOTS="$PWD/docs/screenshots" \
  node --test --test-reporter=spec e2e/handoff.test.mjs || status=$?

if [ "$status" -ne 0 ]; then
  mkdir -p "$ARTIFACTS"
  for name in main auto closed; do
    cp "$work/$name/server.log" "$ARTIFACTS/server-$name.log" 2>/dev/null || true
  done
  echo "e2e: FAILED; screenshots, page HTML and the servers' logs are in e2e/artifacts/" >&2
  tail -n 30 "$work/main/server.log" >&2
fi
exit "$status"
