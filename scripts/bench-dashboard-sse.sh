#!/usr/bin/env bash
# CPU of open dashboards on an idle node: starts a node, measures its CPU for SECS seconds with no dashboard
# (the baseline), then with N dashboards' event streams open (GET /api/v1/events, as the page holds it), and
# prints both as % of one core. Usage: scripts/bench-dashboard-sse.sh [BINARY] [N=10] [SECS=60]
set -euo pipefail
bin=${1:-target/release/streamr-node}
n=${2:-10}
secs=${3:-60}
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" --data-dir "$dir" --http-listen "127.0.0.1:$port" --rtmp-listen 127.0.0.1:0 --p2p-port 0 --upnp false \
  --log warn >/dev/null 2>&1 &
node=$!
curls=()
cleanup() {
  for p in "${curls[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$node" 2>/dev/null || true
  wait "$node" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/api/v1/status" >/dev/null && break; sleep 0.2; done
sleep 5 # let start-up work settle
ticks() { awk '{print $14 + $15}' "/proc/$node/stat"; }
hz=$(getconf CLK_TCK)
measure() {
  local t0 t1
  t0=$(ticks); sleep "$secs"; t1=$(ticks)
  awk -v d=$((t1 - t0)) -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f", 100 * d / hz / s }'
}
base=$(measure)
for _ in $(seq "$n"); do
  curl -sN "http://127.0.0.1:$port/api/v1/events" >/dev/null 2>&1 &
  curls+=($!)
done
sleep 2
with=$(measure)
echo "idle node, ${secs}s each: no dashboard ${base}% of a core; ${n} dashboards (event streams) ${with}% of a core"
