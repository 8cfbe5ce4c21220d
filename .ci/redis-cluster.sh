#!/usr/bin/env bash
# Starts a local Redis Cluster for the cluster suites, unless one already
# answers: three masters with one replica each on loopback ports
# REDIS_CLUSTER_PORT..+5 (default 7101-7106; each node's cluster bus listens
# on its port + 10000), no persistence, state under a temporary directory.
#
# Prints one shell assignment for `eval`: REDIS_CLUSTER_URLS, the six nodes
# as comma-separated redis:// seed URLs. Progress goes to stderr.
set -euo pipefail

first="${REDIS_CLUSTER_PORT:-7101}"
ports=()
for i in 0 1 2 3 4 5; do ports+=("$((first + i))"); done
dir="${REDIS_CLUSTER_DIR:-${TMPDIR:-/tmp}/chatbot-redis-cluster-$first}"

urls() {
  local out=() port
  for port in "${ports[@]}"; do out+=("redis://127.0.0.1:$port"); done
  (IFS=,; echo "REDIS_CLUSTER_URLS=${out[*]}")
}

cluster_ok() {
  redis-cli -p "${ports[0]}" cluster info 2>/dev/null | grep -q '^cluster_state:ok' \
    && [ "$(redis-cli -p "${ports[0]}" cluster nodes 2>/dev/null | wc -l)" -ge 6 ]
}

if cluster_ok; then
  echo "redis-cluster: already running on ports ${ports[0]}-${ports[5]}" >&2
  urls
  exit 0
fi

mkdir -p "$dir"
for port in "${ports[@]}"; do
  if redis-cli -p "$port" ping >/dev/null 2>&1; then
    continue
  fi
  # A node that never joined a cluster forgets its old identity.
  rm -f "$dir/nodes-$port.conf"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$dir/nodes-$port.conf" --cluster-node-timeout 2000 \
    --save '' --appendonly no --dir "$dir" --logfile "$dir/redis-$port.log" \
    --daemonize yes
done
for port in "${ports[@]}"; do
  for _ in $(seq 1 50); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$port" ping >/dev/null
done

# The nodes answer; a cluster that was created before may only need time to
# agree again (after a restart of some nodes), else it is created now.
for _ in $(seq 1 30); do
  cluster_ok && break
  if [ "$(redis-cli -p "${ports[0]}" cluster info | grep '^cluster_slots_assigned:' | tr -dc 0-9)" = 0 ]; then
    nodes=()
    for port in "${ports[@]}"; do nodes+=("127.0.0.1:$port"); done
    echo "redis-cluster: creating the cluster on ${nodes[*]}" >&2
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >&2
  fi
  sleep 0.5
done
if ! cluster_ok; then
  echo "redis-cluster: the cluster on ports ${ports[0]}-${ports[5]} is not healthy:" >&2
  redis-cli -p "${ports[0]}" cluster info >&2 || true
  exit 1
fi
# Every node must know every other before a test asks about replicas.
for _ in $(seq 1 50); do
  ready=1
  for port in "${ports[@]}"; do
    redis-cli -p "$port" cluster info | grep -q '^cluster_state:ok' || ready=0
  done
  [ "$ready" = 1 ] && break
  sleep 0.2
done
echo "redis-cluster: running on ports ${ports[0]}-${ports[5]} (state in $dir)" >&2
urls
