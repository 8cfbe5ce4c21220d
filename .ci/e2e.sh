#!/usr/bin/env bash
# The customer chat (/) and the agent console (/agent) end to end in headless
# Chromium, driven by playwright-core (pinned in e2e/package-lock.json; never
# a browser download), against the debug binary (or CHATBOT_BIN) with
# in-memory stores (Redis with E2E_REDIS_URL):
# - e2e/handoff.test.mjs with the echo model;
# - e2e/answer-parts.test.mjs on a second server whose AI is
#   e2e/mock-openai.mjs (reasoning, tool calls, usage) under a token budget;
# - e2e/queue.test.mjs on the first (places in line) and on two more: one
#   with HANDOFF_ASSIGN=auto and two agents, one whose office hours are closed.
# Called by .ci/run; needs node >= 20 and npm.
#
# Failures leave screenshots, page HTML and the logs in e2e/artifacts/; success writes
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

# CHATBOT_BIN names a binary already built; otherwise the debug one is built.
if [ -z "${CHATBOT_BIN:-}" ]; then cargo build --quiet; fi
(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)

work="$(mktemp -d)"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap stop_all EXIT INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for URL PID LOG: until URL answers, or the process died (its log shown).
wait_for() {
  for _ in $(seq 1 100); do
    curl -fsS "$1" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; exit 1; }
    sleep 0.1
  done
  curl -fsS "$1" >/dev/null
}

# start_server NAME CONFIG...: a server in its own directory ($work/NAME, its
# log in $work/NAME.log) with exactly CONFIG as its environment.
start_server() {
  local name="$1"
  shift
  mkdir -p "$work/$name"
  (cd "$work/$name" && exec env -i "$@" "$BIN") >"$work/$name.log" 2>&1 &
  pids+=("$!")
  wait_for "http://127.0.0.1:$(printf '%s\n' "$@" | sed -n 's/^PORT=//p')/health" "$!" "$work/$name.log"
}

# The server's whole configuration, shared with the `users set-role` command.
# Answers come one word every 150 ms, slow enough to reload in the middle.
port="$(free_port)"
base="http://127.0.0.1:$port"
config=(
  PATH="$PATH" HOME="$work" HOST=127.0.0.1 PORT="$port" RUST_LOG=warn
  JWT_SECRET="e2e-ci-secret-0123456789abcdef0123456789"
  SQLITE_PATH="$work/users.db" ECHO_TOKEN_DELAY=150ms
)
if [ -n "${E2E_REDIS_URL:-}" ]; then
  config+=(REDIS_URL="$E2E_REDIS_URL")
fi
start_server echo "${config[@]}"

# The agent: an ordinary registration, then the operator's command.
agent_user=Ann
agent_password="agent-password-e2e"
curl -fsS -o /dev/null -X POST "$base/api/auth/register" -H 'content-type: application/json' \
  -d "{\"username\":\"$agent_user\",\"email\":\"ann@example.com\",\"password\":\"$agent_password\"}"
(cd "$work/echo" && env -i "${config[@]}" "$BIN" users set-role "$agent_user" agent)

# A second server whose AI is e2e/mock-openai.mjs, a reasoning model that
# calls two tools and reports its usage (1,242 tokens, over a budget of 1,000).
mock_port="$(free_port)"
mock="http://127.0.0.1:$mock_port"
MOCK_PORT="$mock_port" node e2e/mock-openai.mjs >"$work/mock.log" 2>&1 &
pids+=("$!")
wait_for "$mock/health" "$!" "$work/mock.log"
parts_port="$(free_port)"
parts_base="http://127.0.0.1:$parts_port"
token_budget=1000
parts_config=(
  PATH="$PATH" HOME="$work" HOST=127.0.0.1 PORT="$parts_port" RUST_LOG=warn
  JWT_SECRET="e2e-ci-secret-0123456789abcdef0123456789"
  SQLITE_PATH="$work/parts-users.db"
  AI_PROVIDER=openai OPENAI_BASE_URL="$mock/v1" OPENAI_MODEL=mock-reasoner
  RELAY_REASONING=true RELAY_TOOL_ARGUMENTS=true USER_TOKEN_BUDGET="$token_budget"
)
if [ -n "${E2E_REDIS_URL:-}" ]; then
  parts_config+=(REDIS_URL="$E2E_REDIS_URL")
fi
start_server parts "${parts_config[@]}"

# make_agents BASE CONFIG-NAME USER...: registrations, then the operator's command.
make_agents() {
  local base="$1" dir="$2"
  shift 2
  local -n cfg="$dir"
  local user
  for user in "$@"; do
    curl -fsS -o /dev/null -X POST "$base/api/auth/register" -H 'content-type: application/json' \
      -d "{\"username\":\"$user\",\"email\":\"$user@example.com\",\"password\":\"$agent_password\"}"
    (cd "$work/$dir" && env -i "${cfg[@]}" "$BIN" users set-role "$user" agent >/dev/null)
  done
}

# Two more servers for e2e/queue.test.mjs: one where conversations go to the
# agents by themselves (two each at most), and one whose office hours
# (one minute a day, twelve hours from now) are closed while this runs.
auto_port="$(free_port)"
auto_base="http://127.0.0.1:$auto_port"
auto=(
  PATH="$PATH" HOME="$work" HOST=127.0.0.1 PORT="$auto_port" RUST_LOG=warn
  JWT_SECRET="e2e-ci-secret-0123456789abcdef0123456789"
  SQLITE_PATH="$work/auto-users.db" ECHO_TOKEN_DELAY=150ms
  HANDOFF=on HANDOFF_WHEN_NO_AGENT_ONLINE=queue HANDOFF_ASSIGN=auto AGENT_MAX_CONVERSATIONS=2
)
opens="$(date -u -d '+12 hours' +%H:%M)"
closes="$(date -u -d '+12 hours 1 minute' +%H:%M)"
[ "$closes" = "00:00" ] && closes="24:00"
closed_port="$(free_port)"
closed_base="http://127.0.0.1:$closed_port"
closed=(
  PATH="$PATH" HOME="$work" HOST=127.0.0.1 PORT="$closed_port" RUST_LOG=warn
  JWT_SECRET="e2e-ci-secret-0123456789abcdef0123456789"
  SQLITE_PATH="$work/closed-users.db" ECHO_TOKEN_DELAY=150ms
  HANDOFF=on HANDOFF_HOURS="Mon-Sun $opens-$closes" HANDOFF_CLOSED_MESSAGE="Our team is away right now."
)
if [ -n "${E2E_REDIS_URL:-}" ]; then
  # Their own keys on the shared Redis: their queues are not the first one's.
  auto+=(REDIS_URL="$E2E_REDIS_URL" REDIS_KEY_PREFIX="e2e-auto-$$")
  closed+=(REDIS_URL="$E2E_REDIS_URL" REDIS_KEY_PREFIX="e2e-closed-$$")
fi
start_server auto "${auto[@]}"
make_agents "$auto_base" auto Ann Bea
start_server closed "${closed[@]}"

rm -rf "$ARTIFACTS"
status=0
BASE_URL="$base" AGENT_USER="$agent_user" AGENT_PASSWORD="$agent_password" \
  CHROMIUM="$CHROMIUM" ARTIFACTS="$ARTIFACTS" SCREENSHOTS="$PWD/docs/screenshots" \
  node --test --test-reporter=spec e2e/handoff.test.mjs || status=$?
BASE_URL="$base" AGENT_USER="$agent_user" AGENT_PASSWORD="$agent_password" \
  AUTO_BASE_URL="$auto_base" AUTO_AGENTS="Ann,Bea" CLOSED_BASE_URL="$closed_base" \
  CHROMIUM="$CHROMIUM" ARTIFACTS="$ARTIFACTS/queue" \
  node --test --test-reporter=spec e2e/queue.test.mjs || status=$?
BASE_URL="$parts_base" MOCK_URL="$mock" TOKEN_BUDGET="$token_budget" \
  CHROMIUM="$CHROMIUM" ARTIFACTS="$ARTIFACTS/answer-parts" \
  node --test --test-reporter=spec e2e/answer-parts.test.mjs || status=$?

if [ "$status" -ne 0 ]; then
  mkdir -p "$ARTIFACTS"
  for log in echo parts mock auto closed; do cp "$work/$log.log" "$ARTIFACTS/$log.log"; done
  echo "e2e: FAILED; screenshots, page HTML and the logs (echo.log, parts.log, mock.log, auto.log, closed.log) are in e2e/artifacts/" >&2
  for log in echo parts; do
    echo "e2e: the last lines of $log.log:" >&2
    tail -n 30 "$work/$log.log" >&2
  done
fi
exit "$status"
