#!/usr/bin/env bash
# idsync test service: a throwaway Samba Active Directory domain controller on 127.0.0.1.
#
# usage: scripts/services/samba-ad.sh start|stop|status|env|purge [DATADIR]
#   start   install Samba's AD DC packages if missing (Debian), provision on first use (~11 s),
#           start, wait until LDAP answers (bounded), print KEY=VALUE lines for `eval`
#   stop    stop the samba whose pid is in DATADIR/run/samba.pid (that pid only)
#   status  exit 0 if running and answering
#   env     print the KEY=VALUE lines only
#   purge   stop, then delete DATADIR (only if this script created it)
#
# DATADIR defaults to ${TMPDIR:-/tmp}/idsync-samba-ad. Needs root: the AD DC requires it, and
# Samba's LDAP ports are fixed (389, 636, 3268, 3269; kdc 88) on SAMBA_IP.
# Environment:
#   SAMBA_IP (127.0.0.1; another 127.x.y.z allows a second instance), SAMBA_REALM (EXAMPLE.TEST),
#   SAMBA_DOMAIN (EXAMPLE), SAMBA_ADMIN_PW (Passw0rd!Test, must meet AD complexity rules),
#   SAMBA_WAIT_S (60),
#   SAMBA_OWNER_PID: when set, a watcher stops samba once that process has exited.
#
# smb.conf is patched so everything lives under DATADIR, simple binds work on plain ldap://
# ("ldap server require strong auth = no"), only ldap/cldap/kdc run, and TLS uses a test CA
# (AD_TLS_CA_FILE; server SAN: the IP, localhost, dc1.<realm>).
set -euo pipefail

CMD="${1:-start}"
DATADIR="${2:-${TMPDIR:-/tmp}/idsync-samba-ad}"
IP="${SAMBA_IP:-127.0.0.1}"
REALM="${SAMBA_REALM:-EXAMPLE.TEST}"
DOMAIN="${SAMBA_DOMAIN:-EXAMPLE}"
ADMIN_PW="${SAMBA_ADMIN_PW:-Passw0rd!Test}"
WAIT_S="${SAMBA_WAIT_S:-60}"
REALM_LC="$(printf '%s' "$REALM" | tr '[:upper:]' '[:lower:]')"
BASE_DN="$(printf '%s' "$REALM_LC" | sed -E 's/^/DC=/; s/\./,DC=/g')"
TARGET="${DATADIR}/ad"
CONF="${TARGET}/etc/smb.conf"
PIDFILE="${DATADIR}/run/samba.pid"
MARKER="${DATADIR}/.idsync-samba-ad"

fail() { echo "samba-ad.sh: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

apt_get_install() {
  local out; out="$(mktemp)"
  if ls /var/lib/apt/lists/*_Packages >/dev/null 2>&1 &&
     env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$out" 2>&1; then
    rm -f "$out"; return 0
  fi
  env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get update failed"; }
  env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >"$out" 2>&1 \
    || { cat "$out" >&2; rm -f "$out"; fail "apt-get install $* failed"; }
  rm -f "$out"
}

ensure_installed() {
  PATH="$PATH:/usr/sbin:/sbin"
  if command -v samba >/dev/null && command -v samba-tool >/dev/null && command -v ldapsearch >/dev/null \
     && command -v openssl >/dev/null && [ -d /usr/share/samba/setup ] \
     && dpkg -s samba-dsdb-modules >/dev/null 2>&1; then
    return 0
  fi
  apt_get_install samba samba-ad-provision samba-dsdb-modules python3-samba ldap-utils openssl
  command -v samba >/dev/null || fail "samba is not installed"
}

running() {
  [ -s "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && grep -q samba "/proc/$pid/cmdline" 2>/dev/null
}

answering() {
  ldapsearch -x -LLL -H "ldap://${IP}" -D "Administrator@${REALM_LC}" -w "$ADMIN_PW" \
    -b "$BASE_DN" -s base dn >/dev/null 2>&1
}

facts() {
  cat <<EOT
AD_URL=ldap://${IP}:389
AD_LDAPS_URL=ldaps://${IP}:636
AD_BASE_DN=${BASE_DN}
AD_BIND_DN=CN=Administrator,CN=Users,${BASE_DN}
AD_BIND_PW=${ADMIN_PW}
AD_TLS_CA_FILE=${DATADIR}/tls/ca.pem
AD_REALM=${REALM}
AD_DOMAIN=${DOMAIN}
AD_DATA_DIR=${DATADIR}
EOT
}

make_tls() {
  local d="$1" host="$2"
  mkdir -p "$d"; chmod 700 "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=idsync test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=${host}" \
    -keyout "$d/key.pem" -out "$d/server.csr" >/dev/null 2>&1
  cat >"$d/server.ext" <<EOT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:${IP},DNS:localhost,DNS:${host}
EOT
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -days 3650 -extfile "$d/server.ext" -out "$d/cert.pem" >/dev/null 2>&1
  chmod 600 "$d/ca.key" "$d/key.pem"
}

provision() {
  mkdir -p "$DATADIR"
  if [ -n "$(ls -A "$DATADIR")" ] && [ ! -e "$MARKER" ]; then
    fail "$DATADIR is not empty and was not made by this script"
  fi
  touch "$MARKER"
  rm -rf "$TARGET"
  mkdir -p "$DATADIR/run" "$DATADIR/log"
  samba-tool domain provision --targetdir="$TARGET" --realm="$REALM" --domain="$DOMAIN" \
    --server-role=dc --dns-backend=NONE --use-rfc2307 --host-name=dc1 --host-ip="$IP" \
    --adminpass="$ADMIN_PW" >"$DATADIR/provision.log" 2>&1 \
    || { tail -20 "$DATADIR/provision.log" >&2; fail "samba-tool domain provision failed"; }
  make_tls "$DATADIR/tls" "dc1.${REALM_LC}"
  local settings
  settings="$(cat <<EOT
	interfaces = ${IP}/8
	bind interfaces only = yes
	pid directory = ${DATADIR}/run
	ncalrpc dir = ${DATADIR}/run/ncalrpc
	winbindd socket directory = ${DATADIR}/run/winbindd
	ntp signd socket directory = ${DATADIR}/run/ntp_signd
	log file = ${DATADIR}/log/samba.log
	log level = 1
	ldap server require strong auth = no
	load printers = no
	printcap name = /dev/null
	disable spoolss = yes
	server services = ldap, cldap, kdc
	tls enabled = yes
	tls keyfile = ${DATADIR}/tls/key.pem
	tls certfile = ${DATADIR}/tls/cert.pem
	tls cafile = ${DATADIR}/tls/ca.pem
EOT
)"
  awk -v settings="$settings" '
    /^\[global\]/ { print; print settings; next }
    /^[ \t]*(interfaces|bind interfaces only|log file|server services|pid directory)[ \t]*=/ { next }
    { print }' "$CONF" >"$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
  touch "$DATADIR/.initialized"
}

watch_owner() {
  local owner="$1" pid; pid="$(cat "$PIDFILE")"
  nohup setsid bash -c '
    while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
    if kill -0 "$2" 2>/dev/null && grep -q samba "/proc/$2/cmdline" 2>/dev/null; then kill -TERM "$2"; fi
  ' _ "$owner" "$pid" >/dev/null 2>&1 </dev/null &
}

start() {
  [ "$(id -u)" -eq 0 ] || fail "must run as root (Samba AD DC)"
  ensure_installed
  if running && answering; then facts; return 0; fi
  local p
  for p in 389 636 3268 3269; do
    port_open "$IP" "$p" && fail "${IP}:${p} is in use by another process (try SAMBA_IP=127.0.0.2)"
  done
  [ -e "$DATADIR/.initialized" ] || provision
  rm -f "$PIDFILE"
  samba -s "$CONF" -D >"$DATADIR/samba.out" 2>&1 || { cat "$DATADIR/samba.out" >&2; fail "samba did not start"; }
  local tries=0
  until answering; do
    tries=$((tries + 1))
    if [ "$tries" -gt $((WAIT_S * 5)) ]; then
      tail -20 "$DATADIR/log/samba.log" >&2 2>/dev/null || true
      fail "samba does not answer on ldap://${IP} after ${WAIT_S}s"
    fi
    if [ "$tries" -gt 10 ] && ! running; then
      tail -20 "$DATADIR/log/samba.log" >&2 2>/dev/null || true
      fail "samba exited while starting"
    fi
    sleep 0.2
  done
  if [ -n "${SAMBA_OWNER_PID:-}" ]; then watch_owner "$SAMBA_OWNER_PID"; fi
  facts
}

stop() {
  [ -s "$PIDFILE" ] || return 0
  local pid n=0; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null && grep -q samba "/proc/$pid/cmdline" 2>/dev/null; then
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
