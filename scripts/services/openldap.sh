#!/usr/bin/env bash
# idsync test service: a throwaway OpenLDAP slapd on 127.0.0.1.
#
# usage: scripts/services/openldap.sh start|stop|status|env|purge [DATADIR]
#   start   install slapd/ldap-utils if missing (Debian), create the instance on first use,
#           start it, wait until it answers (bounded), print KEY=VALUE lines for `eval`
#   stop    stop the slapd whose pid is in DATADIR/slapd.pid (that pid only)
#   status  exit 0 if running and answering
#   env     print the KEY=VALUE lines only
#   purge   stop, then delete DATADIR (only if this script created it)
#
# DATADIR defaults to ${TMPDIR:-/tmp}/idsync-openldap.
# Environment:
#   OPENLDAP_PORT (3389), OPENLDAP_LDAPS_PORT (3636), OPENLDAP_SUFFIX (dc=example,dc=com),
#   OPENLDAP_ADMIN_PW (admin-secret), OPENLDAP_WAIT_S (30),
#   OPENLDAP_OWNER_PID: when set, a watcher stops slapd once that process has exited
#     (the Rust test harness uses this so no slapd outlives `cargo test`).
#
# The instance: cn=config in DATADIR/slapd.d (slapadd -n0), one mdb database for the suffix
# with the syncprov overlay (RFC 4533 refreshOnly/refreshAndPersist, session log for deletes),
# the ppolicy module loaded (its pwdAccountLockedTime marks disabled accounts), paged results (built into slapd), no size or time limits (tests lower olcSizeLimit at run
# time through cn=config, bound as cn=admin,cn=config), a test CA and server certificate
# (SAN IP:127.0.0.1, DNS:localhost) for ldaps:// and StartTLS. mdb runs without fsync:
# the data is disposable.
set -euo pipefail

CMD="${1:-start}"
DATADIR="${2:-${TMPDIR:-/tmp}/idsync-openldap}"
PORT="${OPENLDAP_PORT:-3389}"
LDAPS_PORT="${OPENLDAP_LDAPS_PORT:-3636}"
SUFFIX="${OPENLDAP_SUFFIX:-dc=example,dc=com}"
ADMIN_PW="${OPENLDAP_ADMIN_PW:-admin-secret}"
WAIT_S="${OPENLDAP_WAIT_S:-30}"
ROOTDN="cn=admin,${SUFFIX}"
URL="ldap://127.0.0.1:${PORT}"
LDAPS_URL="ldaps://127.0.0.1:${LDAPS_PORT}"
PIDFILE="${DATADIR}/slapd.pid"
MARKER="${DATADIR}/.idsync-openldap"

fail() { echo "openldap.sh: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_get_install() {
  local out; out="$(mktemp)"
  # update the package lists only when they are missing or the first install attempt fails
  if ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 &&
     sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$out" 2>&1; then
    rm -f "$out"; return 0
  fi
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get update failed"; }
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get install $* failed"; }
  rm -f "$out"
}

ensure_installed() {
  PATH="$PATH:/usr/sbin:/sbin"
  if command -v slapd >/dev/null && command -v ldapsearch >/dev/null && command -v slapadd >/dev/null \
     && command -v openssl >/dev/null && [ -e /usr/lib/ldap/syncprov.so ]; then
    return 0
  fi
  # no system database (dc=nodomain), no system slapd
  echo "slapd slapd/no_configuration boolean true" | sudo_if_needed debconf-set-selections
  apt_get_install --no-install-recommends slapd ldap-utils openssl
  command -v slapd >/dev/null || fail "slapd is not installed"
}

running() {
  [ -s "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && grep -q slapd "/proc/$pid/cmdline" 2>/dev/null
}

answering() { ldapsearch -x -LLL -H "$URL" -b "" -s base namingContexts >/dev/null 2>&1; }

facts() {
  cat <<EOT
LDAP_URL=${URL}
LDAPS_URL=${LDAPS_URL}
LDAP_TLS_CA_FILE=${DATADIR}/tls/ca.pem
LDAP_BASE_DN=${SUFFIX}
LDAP_BIND_DN=${ROOTDN}
LDAP_BIND_PW=${ADMIN_PW}
LDAP_CONFIG_BIND_DN=cn=admin,cn=config
LDAP_CONFIG_BIND_PW=${ADMIN_PW}
LDAP_DATA_DIR=${DATADIR}
EOT
}

make_tls() {
  local d="$1"
  mkdir -p "$d"; chmod 700 "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=idsync test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$d/key.pem" -out "$d/server.csr" >/dev/null 2>&1
  cat >"$d/server.ext" <<EOT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOT
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/server.ext" -out "$d/cert.pem" >/dev/null 2>&1
  chmod 600 "$d/ca.key" "$d/key.pem"
}

create_instance() {
  mkdir -p "$DATADIR"
  if [ -n "$(ls -A "$DATADIR")" ] && [ ! -e "$MARKER" ]; then
    fail "$DATADIR is not empty and was not made by this script"
  fi
  touch "$MARKER"
  rm -rf "$DATADIR/slapd.d" "$DATADIR/db"
  mkdir -p "$DATADIR/slapd.d" "$DATADIR/db"
  make_tls "$DATADIR/tls"
  local pwhash first_dc
  pwhash="$(slappasswd -s "$ADMIN_PW")"
  first_dc="$(printf '%s' "$SUFFIX" | sed -E 's/^dc=([^,]+).*/\1/')"
  {
    cat <<EOT
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: ${PIDFILE}
olcArgsFile: ${DATADIR}/slapd.args
olcLogLevel: none
olcSizeLimit: unlimited
olcTimeLimit: unlimited
olcToolThreads: 2
olcTLSCACertificateFile: ${DATADIR}/tls/ca.pem
olcTLSCertificateFile: ${DATADIR}/tls/cert.pem
olcTLSCertificateKeyFile: ${DATADIR}/tls/key.pem

dn: cn=module{0},cn=config
objectClass: olcModuleList
cn: module{0}
olcModulePath: /usr/lib/ldap
olcModuleLoad: {0}back_mdb
olcModuleLoad: {1}syncprov
olcModuleLoad: {2}ppolicy

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

EOT
    for schema in core cosine inetorgperson nis; do cat "/etc/ldap/schema/${schema}.ldif"; echo; done
    cat <<EOT
dn: olcDatabase={-1}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {-1}frontend
olcSizeLimit: unlimited
olcTimeLimit: unlimited

dn: olcDatabase={0}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {0}config
olcRootDN: cn=admin,cn=config
olcRootPW: ${pwhash}
olcAccess: {0}to * by * none

dn: olcDatabase={1}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {1}mdb
olcSuffix: ${SUFFIX}
olcDbDirectory: ${DATADIR}/db
olcRootDN: ${ROOTDN}
olcRootPW: ${pwhash}
olcDbMaxSize: 4294967296
olcDbNoSync: TRUE
olcDbCheckpoint: 1024 5
olcDbIndex: objectClass eq
olcDbIndex: entryCSN eq
olcDbIndex: entryUUID eq
olcDbIndex: uid eq
olcDbIndex: ou eq
olcDbIndex: cn,sn,givenName,mail eq,sub
olcDbIndex: employeeNumber eq
olcAccess: {0}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {1}to * by * read
olcSizeLimit: unlimited
olcTimeLimit: unlimited

dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 100 10
olcSpSessionLog: 100000
EOT
  } >"$DATADIR/config.ldif"
  slapadd -n0 -F "$DATADIR/slapd.d" -l "$DATADIR/config.ldif" >/dev/null 2>"$DATADIR/slapadd.err" \
    || { cat "$DATADIR/slapadd.err" >&2; fail "slapadd -n0 (cn=config) failed"; }
  cat >"$DATADIR/base.ldif" <<EOT
dn: ${SUFFIX}
objectClass: top
objectClass: dcObject
objectClass: organization
dc: ${first_dc}
o: idsync test

dn: ou=people,${SUFFIX}
objectClass: organizationalUnit
ou: people
EOT
  # -w writes the contextCSN that syncprov needs
  slapadd -q -w -F "$DATADIR/slapd.d" -b "$SUFFIX" -l "$DATADIR/base.ldif" >/dev/null 2>"$DATADIR/slapadd.err" \
    || { cat "$DATADIR/slapadd.err" >&2; fail "slapadd of the base entries failed"; }
  touch "$DATADIR/.initialized"
}

watch_owner() {
  # stop slapd once the owner process is gone; detached so it survives this script
  local owner="$1" pid; pid="$(cat "$PIDFILE")"
  nohup setsid bash -c '
    while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
    if kill -0 "$2" 2>/dev/null && grep -q slapd "/proc/$2/cmdline" 2>/dev/null; then kill -TERM "$2"; fi
  ' _ "$owner" "$pid" >/dev/null 2>&1 </dev/null &
}

start() {
  ensure_installed
  if running && answering; then facts; return 0; fi
  port_open 127.0.0.1 "$PORT" && fail "127.0.0.1:${PORT} is in use by another process"
  port_open 127.0.0.1 "$LDAPS_PORT" && fail "127.0.0.1:${LDAPS_PORT} is in use by another process"
  [ -e "$DATADIR/.initialized" ] || create_instance
  rm -f "$PIDFILE"
  slapd -F "$DATADIR/slapd.d" -h "${URL}/ ${LDAPS_URL}/" >"$DATADIR/slapd.out" 2>&1 \
    || { cat "$DATADIR/slapd.out" >&2; fail "slapd did not start"; }
  local tries=0
  until answering; do
    tries=$((tries + 1))
    [ "$tries" -le $((WAIT_S * 10)) ] || fail "slapd does not answer on $URL after ${WAIT_S}s"
    sleep 0.1
  done
  if [ -n "${OPENLDAP_OWNER_PID:-}" ]; then watch_owner "$OPENLDAP_OWNER_PID"; fi
  facts
}

stop() {
  [ -s "$PIDFILE" ] || return 0
  local pid n=0; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null && grep -q slapd "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
      n=$((n + 1))
      if [ "$n" -gt 300 ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
      sleep 0.1
    done
  fi
  rm -f "$PIDFILE"
}

case "$CMD" in
  start) start ;;
  stop) stop ;;
  status) running && answering ;;
  env) facts ;;
  purge)
    stop
    if [ -e "$MARKER" ]; then rm -rf "$DATADIR"
    elif [ -e "$DATADIR" ]; then fail "$DATADIR was not made by this script; not deleting"; fi ;;
  *) fail "unknown command '$CMD' (start|stop|status|env|purge)" ;;
esac
