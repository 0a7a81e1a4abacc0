#!/usr/bin/env bash
# scim2-server (python-scim, in-memory) on 127.0.0.1 for idsync's SCIM tests, plus the
# scim2-tester conformance checker (run through scim2-cli) in the same virtualenv.
#
#   scripts/services/scim2.sh [start|stop|status|env|purge] [DATADIR]
#
# start   install the pinned packages into DATADIR/venv (once), start the server, wait until
#         it answers (bounded), print KEY=VALUE facts
# stop    stop the server whose pid is in DATADIR/server.pid (only that pid)
# status  exit 0 when running and answering
# env     print the facts only
# purge   stop, then delete DATADIR (only when this script made it)
#
# Env: SCIM2_PORT (18180), SCIM2_TOKEN (idsync-scim-token), SCIM2_WAIT_S (30),
#      PYTHON (python3 >= 3.10). The venv can be shared: SCIM2_VENV=/some/dir.
# The server keeps its data in memory: every start begins empty.
set -euo pipefail

CMD="${1:-start}"
DATADIR="${2:-${TMPDIR:-/tmp}/idsync-scim2}"
VENV="${SCIM2_VENV:-$DATADIR/venv}"
PORT="${SCIM2_PORT:-18180}"
TOKEN="${SCIM2_TOKEN-idsync-scim-token}"
WAIT_S="${SCIM2_WAIT_S:-30}"
PY="${PYTHON:-python3}"
PINNED=(scim2-server==0.8.3 scim2-models==0.12.3 "scim2-client[httpx2]==0.13.2"
        "scim2-tester[httpx2]==0.5.2" scim2-cli==0.6.0)
URL="http://127.0.0.1:${PORT}/v2"
PID_FILE="$DATADIR/server.pid"
MARK="$DATADIR/.made-by-idsync-scim2"
LOG="$DATADIR/server.log"
RUNNER="$DATADIR/run_server.py"

fail() { echo "scim2.sh: $*" >&2; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_venv() {
  local want="${PINNED[*]}" stamp="$VENV/.idsync-pinned"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return 0; fi
  "$PY" -m venv "$VENV" || fail "cannot create a virtualenv with $PY"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINNED[@]}" \
    >"$DATADIR/pip.log" 2>&1 || { tail -n 30 "$DATADIR/pip.log" >&2; fail "pip install failed"; }
  printf '%s' "$want" >"$stamp"
}

alive() {
  [ -s "$PID_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && grep -q run_server.py "/proc/$pid/cmdline" 2>/dev/null
}

answering() {
  "$VENV/bin/python" - "$URL/ServiceProviderConfig" "$TOKEN" >/dev/null 2>&1 <<'PY'
import sys, urllib.request
r = urllib.request.Request(sys.argv[1])
if sys.argv[2]:
    r.add_header("Authorization", "Bearer " + sys.argv[2])
with urllib.request.urlopen(r, timeout=2) as resp:
    sys.exit(0 if resp.status == 200 else 1)
PY
}

facts() {
  echo "SCIM2_URL=$URL"
  echo "SCIM2_PORT=$PORT"
  echo "SCIM2_TOKEN=$TOKEN"
  echo "SCIM2_VENV=$VENV"
  echo "SCIM2_CLI=$VENV/bin/scim2"
  echo "SCIM2_DATA_DIR=$DATADIR"
}

start() {
  mkdir -p "$DATADIR"
  if [ ! -e "$MARK" ] && [ -n "$(ls -A "$DATADIR")" ]; then
    fail "$DATADIR is not empty and was not made by this script"
  fi
  touch "$MARK"
  ensure_venv
  if alive && answering; then facts; return 0; fi
  listening "$PORT" && fail "127.0.0.1:$PORT is taken by another process"
  # SIGTERM becomes KeyboardInterrupt, which the server's CLI handles as a clean stop.
  cat >"$RUNNER" <<'PY'
import os, signal, sys
def stop(_s, _f):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
with open(os.environ["PID_FILE"] + ".new", "w") as f:
    f.write(str(os.getpid()))
os.replace(os.environ["PID_FILE"] + ".new", os.environ["PID_FILE"])
from scim2_server.testserver.cli import main
sys.argv = ["scim2-server"] + sys.argv[1:]
main()
PY
  rm -f "$PID_FILE"
  local args=(--hostname 127.0.0.1 --port "$PORT")
  [ -z "$TOKEN" ] || args+=(--bearer-token "$TOKEN")
  PID_FILE="$PID_FILE" nohup "$VENV/bin/python" "$RUNNER" "${args[@]}" >"$LOG" 2>&1 </dev/null &
  local child=$! waited=0
  until [ -s "$PID_FILE" ] && answering; do
    kill -0 "$child" 2>/dev/null || { cat "$LOG" >&2; fail "scim2-server exited"; }
    waited=$((waited + 1))
    [ "$waited" -le $((WAIT_S * 10)) ] || { kill "$child" 2>/dev/null || true; fail "no answer after ${WAIT_S}s"; }
    sleep 0.1
  done
  facts
}

stop() {
  alive || { rm -f "$PID_FILE"; return 0; }
  local pid n=0; pid=$(cat "$PID_FILE")
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null; do
    n=$((n + 1))
    if [ "$n" -gt 100 ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
    sleep 0.1
  done
  rm -f "$PID_FILE"
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) alive && answering ;;
  env) facts ;;
  purge)
    stop
    if [ -e "$MARK" ]; then rm -rf "$DATADIR"; elif [ -e "$DATADIR" ]; then fail "$DATADIR was not made by this script"; fi ;;
  *) fail "unknown command $CMD (start|stop|status|env|purge)" ;;
esac
