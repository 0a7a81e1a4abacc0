#!/usr/bin/env bash
# A Standard Webhooks receiver on 127.0.0.1 for idsync-webhook's tests: a small Python
# http.server that verifies EVERY delivery with the reference library (PyPI
# `standardwebhooks`, pinned below) and records what it saw.
#
#   scripts/services/webhook-receiver.sh [start|stop|status|env|purge] [DATADIR]
#
# start   make DATADIR/venv with `pip install standardwebhooks==VERSION` (once), choose the
#         receiver's secret (WEBHOOK_RECEIVER_SECRET, else a random `whsec_` one kept in
#         DATADIR/secret), start the server on a free port, wait until it answers (bounded),
#         print KEY=VALUE facts
# stop    stop the python process whose pid is in DATADIR/server.pid (that pid only)
# status  exit 0 when running and answering
# env     print the facts only
# purge   stop, then delete DATADIR (only when this script made it)
#
# Env: WEBHOOK_RECEIVER_PORT (default: a free port chosen by the kernel),
#      WEBHOOK_RECEIVER_SECRET (a `whsec_<base64>` secret), WEBHOOK_RECEIVER_WAIT_S (30),
#      WEBHOOK_RECEIVER_PIP_INDEX (optional pip index URL),
#      WEBHOOK_RECEIVER_OWNER_PID: when set, a watcher stops the server once that process exited.
#
# The server (DATADIR/receiver.py):
#   POST <any path>            verify with standardwebhooks.Webhook(secret of the path).verify(body,
#                              headers); a failure answers 401 and is recorded as a rejection;
#                              a verified delivery is answered by the next scripted answer of
#                              the path (see below), else `200 ok` (text, not JSON), and recorded
#   GET  /received?path=/p     the records of path /p (all paths without `path`), as a JSON array:
#                              {path, verified, answered, id, timestamp, signature, body | error}
#   POST /_control             JSON {"path": "/p", "status": 410, "retry_after": "1", "count": 2}:
#                              answer the next 2 verified deliveries to /p with 410 (and that
#                              Retry-After); without `count`, every later one. Or
#                              {"path": "/p", "secret": "whsec_..."}: verify /p with that secret
#                              instead of the receiver's own (the rotation tests).
# Every record is also appended to DATADIR/received.jsonl.
set -euo pipefail

CMD="${1:-start}"
DATADIR="${2:-${TMPDIR:-/tmp}/idsync-webhook-receiver}"
VERSION="1.1.0"
WAIT_S="${WEBHOOK_RECEIVER_WAIT_S:-30}"
VENV="$DATADIR/venv"
PID_FILE="$DATADIR/server.pid"
PORT_FILE="$DATADIR/server.port"
SECRET_FILE="$DATADIR/secret"
MARK="$DATADIR/.made-by-idsync-webhook-receiver"
LOG="$DATADIR/server.log"

fail() { echo "webhook-receiver.sh: $*" >&2; exit 1; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

port() { cat "$PORT_FILE" 2>/dev/null || echo "${WEBHOOK_RECEIVER_PORT:-0}"; }

facts() {
  local p; p=$(port)
  echo "WEBHOOK_RECEIVER_URL=http://127.0.0.1:$p"
  echo "WEBHOOK_RECEIVER_PORT=$p"
  echo "WEBHOOK_RECEIVER_SECRET=$(cat "$SECRET_FILE" 2>/dev/null)"
  echo "WEBHOOK_RECEIVER_LOG=$DATADIR/received.jsonl"
  echo "WEBHOOK_RECEIVER_DATA_DIR=$DATADIR"
}

install_python() {
  local out; out="$(mktemp)"
  if ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 &&
     sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >"$out" 2>&1; then
    rm -f "$out"; return 0
  fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get update failed"; }
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get install python3 python3-venv failed"; }
  rm -f "$out"
}

ensure_installed() {
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || fail "python3 with venv is needed"
    install_python
  fi
  mkdir -p "$DATADIR"
  # one installer at a time (tests may start the receiver in parallel)
  exec 8>"$DATADIR/.install.lock"
  flock -w 300 8 || fail "timed out waiting for another install into $VENV"
  if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$VERSION" ] || [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" >"$DATADIR/venv.log" 2>&1 || { cat "$DATADIR/venv.log" >&2; fail "python3 -m venv failed"; }
    local index=()
    if [ -n "${WEBHOOK_RECEIVER_PIP_INDEX:-}" ]; then index=(--index-url "$WEBHOOK_RECEIVER_PIP_INDEX"); fi
    if ! timeout 300 "$VENV/bin/pip" install -q --disable-pip-version-check "${index[@]}" \
          "standardwebhooks==$VERSION" >"$DATADIR/pip.log" 2>&1; then
      tail -20 "$DATADIR/pip.log" >&2
      fail "pip install standardwebhooks==$VERSION failed"
    fi
    printf '%s' "$VERSION" >"$VENV/.installed"
  fi
  flock -u 8
}

write_server() {
  cat >"$DATADIR/receiver.py" <<'PY'
"""A Standard Webhooks receiver: verifies every delivery with the reference library."""
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from standardwebhooks import Webhook

SECRET, LOG, PORT_FILE, PORT = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
LOCK = threading.Lock()
RECORDS = []
SCRIPTS = {}  # path -> list of {"status", "retry_after", "count"}
SECRETS = {}  # path -> secret


def record(r):
    with LOCK:
        RECORDS.append(r)
        with open(LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def scripted(path):
    with LOCK:
        queue = SCRIPTS.get(path) or []
        if not queue:
            return None
        s = queue[0]
        if s.get("count") is not None:
            s["count"] -= 1
            if s["count"] <= 0:
                queue.pop(0)
        return s


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", ctype="text/plain", headers=()):
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        u = urlsplit(self.path)
        if u.path != "/received":
            return self.answer(404, b"not found")
        want = parse_qs(u.query).get("path", [None])[0]
        with LOCK:
            out = [r for r in RECORDS if want is None or r["path"] == want]
        self.answer(200, json.dumps(out, ensure_ascii=False).encode(), "application/json")

    def do_POST(self):
        u = urlsplit(self.path)
        data = self.body()
        if u.path == "/_control":
            c = json.loads(data)
            with LOCK:
                if "secret" in c:
                    SECRETS[c["path"]] = c["secret"]
                if "status" in c:
                    SCRIPTS.setdefault(c["path"], []).append(
                        {"status": int(c["status"]), "retry_after": c.get("retry_after"),
                         "count": c.get("count")})
            return self.answer(204)
        headers = {k: v for k, v in self.headers.items()}
        with LOCK:
            secret = SECRETS.get(u.path, SECRET)
        base = {"path": u.path, "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
                "signature": headers.get("webhook-signature"),
                "query": u.query}
        try:
            payload = Webhook(secret).verify(data, headers)
        except Exception as e:  # every failure of verification is a rejection
            record(dict(base, verified=False, answered=401, error=f"{type(e).__name__}: {e}"))
            return self.answer(401, b"signature rejected")
        s = scripted(u.path)
        status = s["status"] if s else 200
        record(dict(base, verified=True, answered=status, body=payload))
        extra = [("retry-after", str(s["retry_after"]))] if s and s.get("retry_after") else []
        self.answer(status, b"ok" if status == 200 else b"scripted", headers=extra)


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.replace(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
PY
}

alive() {
  [ -s "$PID_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && grep -q receiver.py "/proc/$pid/cmdline" 2>/dev/null
}

answering() {
  [ -s "$PORT_FILE" ] || return 1
  "$VENV/bin/python" - "http://127.0.0.1:$(port)/received?path=/-probe" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
}

make_secret() {
  if [ -n "${WEBHOOK_RECEIVER_SECRET:-}" ]; then
    printf '%s' "$WEBHOOK_RECEIVER_SECRET" >"$SECRET_FILE"
  elif [ ! -s "$SECRET_FILE" ]; then
    "$VENV/bin/python" -c 'import base64, os; print("whsec_" + base64.b64encode(os.urandom(24)).decode(), end="")' >"$SECRET_FILE"
  fi
  chmod 600 "$SECRET_FILE"
}

watch_owner() {
  local owner="$1" pid; pid="$(cat "$PID_FILE")"
  nohup setsid bash -c '
    while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
    if kill -0 "$2" 2>/dev/null && grep -q receiver.py "/proc/$2/cmdline" 2>/dev/null; then kill -TERM "$2"; fi
  ' _ "$owner" "$pid" >/dev/null 2>&1 </dev/null &
}

start() {
  mkdir -p "$DATADIR"
  if [ ! -e "$MARK" ] && [ -n "$(ls -A "$DATADIR")" ]; then
    fail "$DATADIR is not empty and was not made by this script"
  fi
  touch "$MARK"
  ensure_installed
  if alive && answering; then facts; return 0; fi
  make_secret
  write_server
  rm -f "$PORT_FILE" "$PID_FILE"
  : >"$DATADIR/received.jsonl"
  nohup "$VENV/bin/python" "$DATADIR/receiver.py" "$(cat "$SECRET_FILE")" "$DATADIR/received.jsonl" \
    "$PORT_FILE" "${WEBHOOK_RECEIVER_PORT:-0}" >"$LOG" 2>&1 </dev/null &
  local child=$! waited=0
  echo "$child" >"$PID_FILE"
  until answering; do
    kill -0 "$child" 2>/dev/null || { cat "$LOG" >&2; fail "the receiver exited during start"; }
    waited=$((waited + 1))
    if [ "$waited" -gt $((WAIT_S * 10)) ]; then
      kill "$child" 2>/dev/null || true; cat "$LOG" >&2; fail "no answer after ${WAIT_S}s"
    fi
    sleep 0.1
  done
  if [ -n "${WEBHOOK_RECEIVER_OWNER_PID:-}" ]; then watch_owner "$WEBHOOK_RECEIVER_OWNER_PID"; fi
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
  rm -f "$PID_FILE" "$PORT_FILE"
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
