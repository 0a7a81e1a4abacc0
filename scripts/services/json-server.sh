#!/usr/bin/env bash
# json-server 0.17.4 (npm) on 127.0.0.1: a real REST/JSON server for idsync-rest's tests,
# serving a generated HR data set (departments and people) or a db.json of the caller's.
#
#   scripts/services/json-server.sh [start|stop|status|env|purge] [DATADIR]
#
# start   npm-install json-server into its own folder (once), write DATADIR/seed.json (the HR
#         data set, unless JSON_SERVER_DB names a file to serve), copy it to DATADIR/db.json
#         (json-server rewrites the file it serves on every write), start the server on a
#         free port, wait until it answers (bounded), print KEY=VALUE facts
# stop    stop the node process whose pid is in DATADIR/server.pid (that pid only)
# status  exit 0 when running and answering
# env     print the facts only
# purge   stop, then delete DATADIR (only when this script made it)
#
# Env: JSON_SERVER_PORT (default: a free port, 3961 and up), JSON_SERVER_DB (a db.json to
#      serve instead of the HR set), JSON_SERVER_PEOPLE (3000) and JSON_SERVER_DEPARTMENTS
#      (120): the size of the HR set, JSON_SERVER_WAIT_S (30), JSON_SERVER_NODE_DIR
#      (DATADIR/node: where node_modules go; share one between data dirs to install once),
#      JSON_SERVER_OWNER_PID: when set, a watcher stops the server once that process exited.
#
# The HR set (deterministic): departments d1..dN in a tree (d1 the root, each next one
# under an earlier one), people p1..pM with login, name, work email, employee number,
# title, one or two department ids, a manager, active flag and updated_at.
set -euo pipefail

CMD="${1:-start}"
DATADIR="${2:-${TMPDIR:-/tmp}/idsync-json-server}"
VERSION="0.17.4"
NODE_DIR="${JSON_SERVER_NODE_DIR:-$DATADIR/node}"
WAIT_S="${JSON_SERVER_WAIT_S:-30}"
PEOPLE="${JSON_SERVER_PEOPLE:-3000}"
DEPTS="${JSON_SERVER_DEPARTMENTS:-120}"
PID_FILE="$DATADIR/server.pid"
PORT_FILE="$DATADIR/server.port"
MARK="$DATADIR/.made-by-idsync-json-server"
LOG="$DATADIR/server.log"
BIN="$NODE_DIR/node_modules/json-server/lib/cli/bin.js"

fail() { echo "json-server.sh: $*" >&2; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

port() { cat "$PORT_FILE" 2>/dev/null || echo "${JSON_SERVER_PORT:-0}"; }

facts() {
  local p; p=$(port)
  echo "JSON_SERVER_URL=http://127.0.0.1:$p"
  echo "JSON_SERVER_PORT=$p"
  echo "JSON_SERVER_DB=$DATADIR/db.json"
  echo "JSON_SERVER_SEED=$DATADIR/seed.json"
  echo "JSON_SERVER_DATA_DIR=$DATADIR"
  echo "JSON_SERVER_NODE_DIR=$NODE_DIR"
}

install_node() {
  local out; out="$(mktemp)"
  if ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 &&
     sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >"$out" 2>&1; then
    rm -f "$out"; return 0
  fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get update failed"; }
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get install nodejs npm failed"; }
  rm -f "$out"
}

ensure_installed() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || fail "node and npm are needed"
    install_node
  fi
  mkdir -p "$NODE_DIR"
  # one installer at a time per node dir (tests start servers in parallel)
  exec 8>"$NODE_DIR/.install.lock"
  flock -w 300 8 || fail "timed out waiting for another install into $NODE_DIR"
  if [ "$(cat "$NODE_DIR/.installed" 2>/dev/null)" != "$VERSION" ] || [ ! -e "$BIN" ]; then
    printf '{"name":"idsync-json-server","private":true}\n' >"$NODE_DIR/package.json"
    if ! (cd "$NODE_DIR" && timeout 300 npm install --no-audit --no-fund --loglevel=error \
          --cache "$NODE_DIR/.npm-cache" "json-server@$VERSION" >"$NODE_DIR/npm.log" 2>&1); then
      tail -20 "$NODE_DIR/npm.log" >&2
      fail "npm install json-server@$VERSION failed"
    fi
    printf '%s' "$VERSION" >"$NODE_DIR/.installed"
  fi
  flock -u 8
}

alive() {
  [ -s "$PID_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  kill -0 "$pid" 2>/dev/null && grep -q json-server "/proc/$pid/cmdline" 2>/dev/null
}

answering() {
  node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
    .then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' \
    "http://127.0.0.1:$(port)/db" >/dev/null 2>&1
}

free_port() {
  if [ -n "${JSON_SERVER_PORT:-}" ]; then echo "$JSON_SERVER_PORT"; return; fi
  local p=3961
  while listening "$p" || [ "$p" -gt 65000 ]; do p=$((p + 1 + RANDOM % 16)); done
  echo "$p"
}

write_hr_set() {
  node - "$1" "$PEOPLE" "$DEPTS" <<'JS'
const [file, people, depts] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const fs = require('fs');
const zh = ['研发中心', '市场部', '财务部', '人力资源部', '产品部', '测试组', '运维组', '销售部'];
const en = ['Engineering', 'Sales', 'Support', 'Legal', 'Operations', 'Research', 'Design'];
const surnames = ['王', '李', '张', '刘', '陈', '杨', 'Smith', 'Jones', 'García', 'Müller'];
const given = ['伟', '芳', '娜', '敏', 'Alice', 'Bob', 'Chloé', 'Dmitri', 'Ngozi', 'Yuki'];
const titles = ['工程师', 'Engineer', '经理', 'Manager', 'Analyst', 'Designer'];
const base = Date.UTC(2026, 0, 1);
const iso = (i) => new Date(base + i * 60000).toISOString().replace(/\.\d{3}Z$/, 'Z');
const departments = [];
for (let i = 1; i <= depts; i++) {
  const parent = i === 1 ? null : `d${1 + ((i * 7) % (i - 1))}`;
  const name = i === 1 ? '总公司 Head Office' : `${(i % 2 ? zh : en)[i % (i % 2 ? zh.length : en.length)]} ${i}`;
  departments.push({ id: `d${i}`, name, parent_id: parent, sort: i, cost_center: `CC-${100 + (i % 13)}`, updated_at: iso(i) });
}
const persons = [];
for (let i = 1; i <= people; i++) {
  const d1 = `d${1 + (i % depts)}`;
  const ds = i % 11 === 0 ? [d1, `d${1 + ((i * 3) % depts)}`].filter((v, k, a) => a.indexOf(v) === k) : [d1];
  persons.push({
    id: `p${i}`,
    login: `emp${String(i).padStart(5, '0')}`,
    name: `${surnames[i % surnames.length]}${given[(i * 7) % given.length]} ${i}`,
    work_email: `emp${String(i).padStart(5, '0')}@hr.example.com`,
    employee_no: `E${String(i).padStart(6, '0')}`,
    job_title: titles[i % titles.length],
    mobile: i % 4 === 0 ? `+86 139 ${String(i).padStart(8, '0')}` : null,
    department_ids: ds,
    manager_id: i > 10 ? `p${1 + (i % 10)}` : null,
    active: i % 17 !== 0,
    updated_at: iso(depts + i),
  });
}
fs.writeFileSync(file, JSON.stringify({ departments, people: persons }, null, 1));
JS
}

watch_owner() {
  local owner="$1" pid; pid="$(cat "$PID_FILE")"
  nohup setsid bash -c '
    while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
    if kill -0 "$2" 2>/dev/null && grep -q json-server "/proc/$2/cmdline" 2>/dev/null; then kill -TERM "$2"; fi
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
  if [ -n "${JSON_SERVER_DB:-}" ]; then
    [ -r "$JSON_SERVER_DB" ] || fail "JSON_SERVER_DB=$JSON_SERVER_DB cannot be read"
    cp "$JSON_SERVER_DB" "$DATADIR/seed.json"
  else
    write_hr_set "$DATADIR/seed.json" || fail "cannot write the HR data set"
  fi
  cp "$DATADIR/seed.json" "$DATADIR/db.json"
  local tries=0 p child
  while :; do
    p=$(free_port)
    echo "$p" >"$PORT_FILE"
    rm -f "$PID_FILE"
    nohup node "$BIN" --host 127.0.0.1 --port "$p" --quiet "$DATADIR/db.json" >"$LOG" 2>&1 </dev/null &
    child=$!
    echo "$child" >"$PID_FILE"
    local waited=0
    until answering; do
      kill -0 "$child" 2>/dev/null || break
      waited=$((waited + 1))
      if [ "$waited" -gt $((WAIT_S * 10)) ]; then
        kill "$child" 2>/dev/null || true; cat "$LOG" >&2; fail "no answer after ${WAIT_S}s"
      fi
      sleep 0.1
    done
    if kill -0 "$child" 2>/dev/null; then break; fi
    # the port was taken between the probe and the bind: try another one
    tries=$((tries + 1))
    [ -z "${JSON_SERVER_PORT:-}" ] && [ "$tries" -lt 5 ] || { cat "$LOG" >&2; fail "json-server exited during start"; }
  done
  if [ -n "${JSON_SERVER_OWNER_PID:-}" ]; then watch_owner "$JSON_SERVER_OWNER_PID"; fi
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
