#!/usr/bin/env bash
# bench:stall — how often a whole-machine stall changes the Raft leader: three agents of BINARY on loopback,
# then ROUNDS times SIGSTOP all three at once for STOP_MS and SIGCONT them (a loaded VM, a GC pause of every
# process, the host's steal time), 1.5 s apart. Prints the term and leader before and after: each new term
# is a leader change for nothing (no agent died; every one of them stalled alike).
#
#   npm run build && npm run bench:stall -- [BINARY] [ROUNDS] [STOP_MS]     (default dist/shoal 10 500)
set -euo pipefail
BIN=${1:-dist/shoal}
ROUNDS=${2:-10}
STOP_MS=${3:-500}
WORK=$(mktemp -d /tmp/shoal-bench-stall-XXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$((47000 + RANDOM % 900 * 2))
status() {
  curl -s --unix-socket "$WORK/n1/api.sock" http://shoal/v1/status |
    node -e 'let s="";process.stdin.on("data",(d)=>(s+=d)).on("end",()=>{const v=JSON.parse(s);console.log(`${v.voters.length} ${v.term} ${v.leader?.name ?? "none"}`)})'
}
"$BIN" agent --data-dir "$WORK/n1" --name n1 --listen 127.0.0.1:$PORT --api 127.0.0.1:$((PORT + 1)) \
  --dns off --isolation off --cpu 1 --memory 512 >"$WORK/n1.log" 2>&1 &
PIDS+=($!)
KEY=""
for _ in $(seq 1 100); do
  KEY=$(grep -o -- '--key [0-9a-f]\{64\}' "$WORK/n1.log" | head -1 | cut -d' ' -f2 || true)
  [ -n "$KEY" ] && break
  sleep 0.2
done
[ -n "$KEY" ] || { echo "bench:stall: n1 did not start: $(tail -3 "$WORK/n1.log")" >&2; exit 1; }
for n in 2 3; do
  "$BIN" agent --data-dir "$WORK/n$n" --name "n$n" --listen 127.0.0.1:$((PORT + 2 * n)) \
    --api 127.0.0.1:$((PORT + 2 * n + 1)) --dns off --isolation off --cpu 1 --memory 512 \
    --join 127.0.0.1:$PORT --key "$KEY" >"$WORK/n$n.log" 2>&1 &
  PIDS+=($!)
done
for _ in $(seq 1 120); do
  [ "$(status 2>/dev/null | cut -d' ' -f1)" = 3 ] && break
  sleep 0.5
done
sleep 3
read -r VOTERS TERM_BEFORE LEADER_BEFORE <<<"$(status)"
[ "$VOTERS" = 3 ] || { echo "bench:stall: the cluster has $VOTERS voters, not 3" >&2; exit 1; }
for _ in $(seq 1 "$ROUNDS"); do
  kill -STOP "${PIDS[@]}"
  sleep "$(node -e "console.log($STOP_MS / 1000)")"
  kill -CONT "${PIDS[@]}"
  sleep 1.5
done
sleep 2
read -r _ TERM_AFTER LEADER_AFTER <<<"$(status)"
echo "bench:stall ($BIN): $ROUNDS stalls of $STOP_MS ms of all three agents at once: term $TERM_BEFORE -> $TERM_AFTER ($((TERM_AFTER - TERM_BEFORE)) new terms), leader $LEADER_BEFORE -> $LEADER_AFTER"
