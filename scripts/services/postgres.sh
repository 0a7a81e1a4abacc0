#!/usr/bin/env bash
# idsync test service: a throwaway PostgreSQL server on 127.0.0.1.
#
# usage: scripts/services/postgres.sh start|stop|status|env|purge [DATADIR]
#   start   install PostgreSQL if missing (Debian: postgresql-15, else postgresql), create the
#           cluster on first use (initdb), start it on a free port, wait until it answers
#           (bounded), create the database, print KEY=VALUE lines for `eval`
#   stop    stop the server of DATADIR (pg_ctl stop -m fast; that cluster only)
#   status  exit 0 if running and answering
#   env     print the KEY=VALUE lines only
#   purge   stop, then delete DATADIR (only if this script created it)
#
# DATADIR defaults to ${TMPDIR:-/tmp}/idsync-postgres. Its parent must be traversable by the
# server's user (PostgreSQL refuses to run as root: as root the cluster belongs to the
# `postgres` system user, created if missing).
# Environment:
#   POSTGRES_PORT   port to use (default: the first free one from 54329 on; kept in DATADIR/port)
#   POSTGRES_DB     database to create (idsync)
#   POSTGRES_WAIT_S seconds to wait for the server (30)
#   PG_BIN          directory of initdb/pg_ctl/psql (default: newest /usr/lib/postgresql/*/bin)
#   POSTGRES_OWNER_PID: when set, a watcher stops the server once that process has exited
#     (the Rust test harness uses this so no server outlives `cargo test`).
#
# The cluster: trust authentication on 127.0.0.1 only (no password: the data is disposable),
# fsync, synchronous_commit and full_page_writes off, UTF8 without locale. TLS is on: a test
# CA and a server certificate for 127.0.0.1 and localhost are made with openssl in
# DATADIR/tls on first use; clients may connect with or without TLS.
# Printed: DATABASE_URL=postgres://postgres@127.0.0.1:PORT/DB, PGHOST, PGPORT, PGUSER, PGDATABASE,
# POSTGRES_CA_FILE (the test CA, for sslmode=verify-full&sslrootcert=...).
set -euo pipefail

CMD="${1:-start}"
DATADIR="${2:-${TMPDIR:-/tmp}/idsync-postgres}"
DB="${POSTGRES_DB:-idsync}"
WAIT_S="${POSTGRES_WAIT_S:-30}"
CLUSTER="${DATADIR}/data"
SOCKDIR="${DATADIR}/sock"
LOG="${DATADIR}/postgres.log"
PORTFILE="${DATADIR}/port"
MARKER="${DATADIR}/.idsync-postgres"
TLSDIR="${DATADIR}/tls"
PGUSER_NAME="postgres"

fail() { echo "postgres.sh: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

find_bin() {
  if [ -n "${PG_BIN:-}" ] && [ -x "${PG_BIN}/pg_ctl" ]; then echo "$PG_BIN"; return 0; fi
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [ -n "$d" ] && [ -x "$d/pg_ctl" ]; then echo "$d"; return 0; fi
  return 1
}

apt_get_install() {
  local out; out="$(mktemp)"
  if ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 &&
     sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$out" 2>&1; then
    rm -f "$out"; return 0
  fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; return 1; }
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; return 1; }
  rm -f "$out"
}

ensure_installed() {
  if BIN="$(find_bin)"; then return 0; fi
  apt_get_install --no-install-recommends postgresql-15 \
    || apt_get_install --no-install-recommends postgresql \
    || fail "could not install PostgreSQL with apt-get"
  BIN="$(find_bin)" || fail "PostgreSQL binaries not found under /usr/lib/postgresql/*/bin"
}

# Run a PostgreSQL program as the cluster's owner (never as root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u "$PGUSER_NAME" -- "$@"
  else
    "$@"
  fi
}

ensure_user() {
  if [ "$(id -u)" -ne 0 ]; then PGUSER_NAME="$(id -un)"; return 0; fi
  id "$PGUSER_NAME" >/dev/null 2>&1 \
    || useradd --system --no-create-home --shell /usr/sbin/nologin "$PGUSER_NAME" \
    || fail "could not create the ${PGUSER_NAME} user"
}

free_port() {
  PORT=54329
  while port_open 127.0.0.1 "$PORT"; do
    PORT=$((PORT + 1))
    [ "$PORT" -lt 54429 ] || fail "no free port in 54329..54428"
  done
}

pick_port() {
  if [ -n "${POSTGRES_PORT:-}" ]; then PORT="$POSTGRES_PORT"; return 0; fi
  if [ -s "$PORTFILE" ]; then PORT="$(cat "$PORTFILE")"; return 0; fi
  free_port
}

read_port() {
  [ -s "$PORTFILE" ] || fail "no cluster in ${DATADIR} (run start first)"
  PORT="$(cat "$PORTFILE")"
}

facts() {
  cat <<EOT
DATABASE_URL=postgres://${PGUSER_NAME}@127.0.0.1:${PORT}/${DB}
PGHOST=127.0.0.1
PGPORT=${PORT}
PGUSER=${PGUSER_NAME}
PGDATABASE=${DB}
POSTGRES_DATADIR=${DATADIR}
POSTGRES_CA_FILE=${TLSDIR}/ca.pem
EOT
}

running() {
  [ -d "$CLUSTER" ] || return 1
  as_owner "$BIN/pg_ctl" -D "$CLUSTER" status >/dev/null 2>&1
}

answering() {
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U "$PGUSER_NAME" >/dev/null 2>&1
}

create_cluster() {
  mkdir -p "$DATADIR"
  touch "$MARKER"
  mkdir -p "$SOCKDIR"
  if [ "$(id -u)" -eq 0 ]; then chown -R "$PGUSER_NAME" "$DATADIR"; fi
  as_owner test -w "$DATADIR" \
    || fail "${DATADIR} is not writable by ${PGUSER_NAME} (is a parent directory private?)"
  as_owner "$BIN/initdb" -D "$CLUSTER" -U "$PGUSER_NAME" --auth=trust -E UTF8 --no-locale \
    >"$DATADIR/initdb.log" 2>&1 || { cat "$DATADIR/initdb.log" >&2; fail "initdb failed"; }
  cat >>"$CLUSTER/postgresql.conf" <<EOT
# idsync test cluster: disposable data, loopback only
listen_addresses = '127.0.0.1'
unix_socket_directories = '${SOCKDIR}'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 100
EOT
  echo "$PORT" >"$PORTFILE"
}

# A test CA and a server certificate (SAN 127.0.0.1, localhost) signed by it, and TLS on in
# the cluster's configuration. Idempotent: kept across restarts.
ensure_tls() {
  command -v openssl >/dev/null 2>&1 || fail "openssl is needed to make the test TLS certificate"
  if [ ! -s "$TLSDIR/server.crt" ] || [ ! -s "$TLSDIR/server.key" ] || [ ! -s "$TLSDIR/ca.pem" ]; then
    mkdir -p "$TLSDIR"
    local log="$TLSDIR/openssl.log"
    {
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj "/CN=idsync test CA" -keyout "$TLSDIR/ca.key" -out "$TLSDIR/ca.pem" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" &&
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -subj "/CN=localhost" -keyout "$TLSDIR/server.key" -out "$TLSDIR/server.csr" &&
      printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$TLSDIR/server.ext" &&
      openssl x509 -req -in "$TLSDIR/server.csr" -CA "$TLSDIR/ca.pem" -CAkey "$TLSDIR/ca.key" \
        -CAcreateserial -days 3650 -extfile "$TLSDIR/server.ext" -out "$TLSDIR/server.crt"
    } >"$log" 2>&1 || { cat "$log" >&2; fail "could not make the test TLS certificate"; }
    chmod 600 "$TLSDIR/server.key" "$TLSDIR/ca.key"
    chmod 644 "$TLSDIR/ca.pem" "$TLSDIR/server.crt"
    if [ "$(id -u)" -eq 0 ]; then chown -R "$PGUSER_NAME" "$TLSDIR"; fi
  fi
  if ! grep -q "^# idsync test cluster: TLS" "$CLUSTER/postgresql.conf"; then
    cat >>"$CLUSTER/postgresql.conf" <<EOT
# idsync test cluster: TLS with the test CA of ${TLSDIR}
ssl = on
ssl_cert_file = '${TLSDIR}/server.crt'
ssl_key_file = '${TLSDIR}/server.key'
EOT
  fi
}

watch_owner() {
  # stop the server once the owner process is gone; detached so it survives this script
  local owner="$1"
  nohup setsid bash "$(readlink -f "$0")" __watch "$DATADIR" "$owner" >/dev/null 2>&1 </dev/null &
}

start() {
  ensure_installed
  ensure_user
  pick_port
  if running && answering; then facts; return 0; fi
  if port_open 127.0.0.1 "$PORT"; then
    # the port this cluster used last time is taken now: move, unless it was asked for
    [ -z "${POSTGRES_PORT:-}" ] || fail "127.0.0.1:${PORT} is in use by another process"
    free_port
  fi
  [ -e "$CLUSTER/PG_VERSION" ] || create_cluster
  ensure_tls
  echo "$PORT" >"$PORTFILE"
  as_owner "$BIN/pg_ctl" -D "$CLUSTER" -l "$LOG" -o "-p ${PORT}" -w -t "$WAIT_S" start \
    >/dev/null 2>&1 || { tail -n 30 "$LOG" >&2 || true; fail "the server did not start"; }
  local n=0
  until answering; do
    n=$((n + 1)); [ "$n" -le $((WAIT_S * 10)) ] || fail "the server does not answer on ${PORT}"
    sleep 0.1
  done
  if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U "$PGUSER_NAME" -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = '${DB}'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U "$PGUSER_NAME" "$DB" \
      || fail "could not create database ${DB}"
  fi
  if [ -n "${POSTGRES_OWNER_PID:-}" ]; then watch_owner "$POSTGRES_OWNER_PID"; fi
  facts
}

stop() {
  [ -d "$CLUSTER" ] || return 0
  if running; then
    as_owner "$BIN/pg_ctl" -D "$CLUSTER" -m fast -w -t 30 stop >/dev/null 2>&1 \
      || as_owner "$BIN/pg_ctl" -D "$CLUSTER" -m immediate -w -t 10 stop >/dev/null 2>&1 \
      || fail "could not stop the server of ${CLUSTER}"
  fi
}

case "$CMD" in
  start) start ;;
  stop) BIN="$(find_bin)" || exit 0; ensure_user; stop ;;
  status)
    BIN="$(find_bin)" || exit 1; ensure_user; read_port
    running && answering ;;
  env) BIN="$(find_bin)" || fail "PostgreSQL is not installed"; ensure_user; read_port; facts ;;
  purge)
    if BIN="$(find_bin)"; then ensure_user; stop; fi
    if [ -e "$MARKER" ]; then rm -rf "$DATADIR"; fi ;;
  __watch)
    owner="${3:?}"
    while kill -0 "$owner" 2>/dev/null; do sleep 1; done
    BIN="$(find_bin)" || exit 0; ensure_user; stop ;;
  *) fail "unknown command ${CMD} (start|stop|status|env|purge)" ;;
esac
