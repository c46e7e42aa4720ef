#!/usr/bin/env bash
# The README's first command: a single local shoal node (exec driver; no Docker needed) and a first task.
# The agent keeps running afterwards until Ctrl-C; SHOAL_DEMO_EXIT=1 stops it after the first task (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x dist/shoal ] || npm run build --silent
SHOAL=./dist/shoal
DATA=${SHOAL_DEMO_DIR:-$(mktemp -d -t shoal-demo.XXXXXX)}
API=127.0.0.1:${SHOAL_DEMO_API_PORT:-4701}
# The node's own Unix socket: the CLI needs no token there (over TCP it would).
export SHOAL_ADDR=unix:$DATA/api.sock
"$SHOAL" agent --data-dir "$DATA" --name local --listen "127.0.0.1:${SHOAL_DEMO_PORT:-4700}" --api "$API" &
AGENT=$!
trap 'kill "$AGENT" 2>/dev/null || true; wait "$AGENT" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do "$SHOAL" status >/dev/null 2>&1 && break; sleep 0.1; done
echo
echo '$ shoal run --name hello -- sh -c "echo hello from shoal; uname -sr"'
id=$("$SHOAL" run --name hello -- sh -c 'echo hello from shoal; uname -sr')
for _ in $(seq 1 100); do "$SHOAL" ps | grep "^$id" | grep -q finished && break; sleep 0.1; done
echo '$ shoal ps'; "$SHOAL" ps
echo "\$ shoal logs $id"; "$SHOAL" logs "$id"
echo '$ shoal members'; "$SHOAL" members
if [ "${SHOAL_DEMO_EXIT:-}" = 1 ]; then exit 0; fi
echo
echo "The agent keeps running (data in $DATA). In another terminal: export SHOAL_ADDR=$SHOAL_ADDR; ./dist/shoal run -- sleep 30; ./dist/shoal ps"
echo "Ctrl-C stops it."
wait "$AGENT"
