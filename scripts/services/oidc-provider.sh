#!/usr/bin/env bash
# idsync test service: a real OpenID Connect provider (panva's oidc-provider on Node.js) on
# 127.0.0.1, with one confidential client and dev interactions (any login name, any password).
#
# usage: scripts/services/oidc-provider.sh start|stop|status|env|purge [DATADIR]
#   start   npm-install oidc-provider if missing, start it, wait until discovery answers
#           (bounded), print KEY=VALUE lines for `eval`
#   stop    stop the node process whose pid is in DATADIR/oidc.pid (that pid only)
#   status  exit 0 if running and answering
#   env     print the KEY=VALUE lines only
#   purge   stop, then delete DATADIR (only if this script created it)
#
# DATADIR defaults to ${TMPDIR:-/tmp}/idsync-oidc-provider.
# Environment:
#   OIDC_PORT (9090), OIDC_CLIENT_ID (idsync-test), OIDC_CLIENT_SECRET (idsync-test-secret),
#   OIDC_REDIRECT_URIS (http://127.0.0.1:8765/callback; comma separated),
#   OIDC_CODE_TTL (600: seconds an authorization code lives), OIDC_WAIT_S (30),
#   OIDC_PROVIDER_VERSION (9.13.3), OIDC_NODE_DIR (DATADIR/node: where node_modules go; share
#   one between data dirs to install once), OIDC_OWNER_PID: when set, a watcher stops the
#   provider once that process has exited (the Rust test harness uses this).
#
# Accounts: every login name is accepted. The claims of login ID come from
# DATADIR/accounts.d/ID.json when that file exists (read again at every login, so a test can
# change a claim between two logins), else from the built-in alice and bob, else they are
# generated with email_verified false. A claims file may hold "_userinfo_only": [names]: those
# claims are then left out of the ID token and only served by the userinfo endpoint.
# The signing key (RS256) and cookie keys persist in DATADIR/keys.json; grants live in memory.
set -euo pipefail

CMD="${1:-start}"
DATADIR="${2:-${TMPDIR:-/tmp}/idsync-oidc-provider}"
PORT="${OIDC_PORT:-9090}"
CLIENT_ID="${OIDC_CLIENT_ID:-idsync-test}"
CLIENT_SECRET="${OIDC_CLIENT_SECRET:-idsync-test-secret}"
REDIRECT_URIS="${OIDC_REDIRECT_URIS:-http://127.0.0.1:8765/callback}"
CODE_TTL="${OIDC_CODE_TTL:-600}"
WAIT_S="${OIDC_WAIT_S:-30}"
VERSION="${OIDC_PROVIDER_VERSION:-9.13.3}"
NODE_DIR="${OIDC_NODE_DIR:-${DATADIR}/node}"
ISSUER="http://127.0.0.1:${PORT}"
PIDFILE="${DATADIR}/oidc.pid"
MARKER="${DATADIR}/.idsync-oidc-provider"
LOG="${DATADIR}/oidc.log"
SERVER_JS="${NODE_DIR}/idsync-oidc-server.mjs"

fail() { echo "oidc-provider.sh: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

facts() {
  cat <<EOT
OIDC_ISSUER=${ISSUER}
OIDC_CLIENT_ID=${CLIENT_ID}
OIDC_CLIENT_SECRET=${CLIENT_SECRET}
OIDC_REDIRECT_URI=${REDIRECT_URIS%%,*}
OIDC_ACCOUNTS_DIR=${DATADIR}/accounts.d
OIDC_CODE_TTL=${CODE_TTL}
OIDC_DATA_DIR=${DATADIR}
OIDC_PID_FILE=${PIDFILE}
EOT
}

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_node() {
  # Debian's nodejs and npm; the package lists are updated only when missing or stale
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
    command -v apt-get >/dev/null 2>&1 || fail "node and npm are needed (Node.js 20 or later)"
    install_node
  fi
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || fail "Node.js $(node --version) is too old: oidc-provider 9 needs 20 or later"
  mkdir -p "$NODE_DIR"
  # one installer at a time per node dir (test binaries may start in parallel)
  exec 8>"${NODE_DIR}/.install.lock"
  flock -w 300 8 || fail "timed out waiting for another install into ${NODE_DIR}"
  if [ "$(cat "${NODE_DIR}/.installed" 2>/dev/null)" != "$VERSION" ] \
     || [ ! -e "${NODE_DIR}/node_modules/oidc-provider/package.json" ]; then
    printf '{"name":"idsync-oidc-test-provider","private":true,"type":"module"}\n' >"${NODE_DIR}/package.json"
    if ! (cd "$NODE_DIR" && timeout 300 npm install --no-audit --no-fund --loglevel=error \
          --cache "${NODE_DIR}/.npm-cache" "oidc-provider@${VERSION}" >"${NODE_DIR}/npm.log" 2>&1); then
      tail -20 "${NODE_DIR}/npm.log" >&2
      fail "npm install oidc-provider@${VERSION} failed"
    fi
    printf '%s' "$VERSION" >"${NODE_DIR}/.installed"
  fi
  flock -u 8
}

running() {
  [ -s "$PIDFILE" ] || return 1
  local pid; pid="$(cat "$PIDFILE")"
  kill -0 "$pid" 2>/dev/null && grep -q idsync-oidc-server "/proc/$pid/cmdline" 2>/dev/null
}

answering() {
  node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
    .then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))' \
    "${ISSUER}/.well-known/openid-configuration" >/dev/null 2>&1
}

write_server() {
  # next to node_modules, so that the import resolves; written whole, then renamed
  cat >"${SERVER_JS}.$$" <<'JS'
// idsync's test OP. Configured by environment (see oidc-provider.sh).
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const env = process.env;

const port = Number(env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const dataDir = env.OIDC_DATA_DIR;

const keysFile = `${dataDir}/keys.json`;
if (!existsSync(keysFile)) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
  writeFileSync(`${keysFile}.tmp`, JSON.stringify({ jwks: { keys: [jwk] }, cookies: [randomBytes(32).toString('hex')] }), { mode: 0o600 });
  renameSync(`${keysFile}.tmp`, keysFile);
}
const keys = JSON.parse(readFileSync(keysFile, 'utf8'));

const builtIn = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Example', preferred_username: 'alice', groups: ['admins', 'users'] },
  bob: { email: 'bob@example.com', email_verified: true, name: 'Bob Example', preferred_username: 'bob', groups: ['users'] },
};

function claimsOf(id) {
  const file = `${dataDir}/accounts.d/${encodeURIComponent(id)}.json`;
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8'));
  return builtIn[id] || { email: `${id}@example.com`, email_verified: false, name: id, preferred_username: id, groups: [] };
}

const provider = new Provider(issuer, {
  clients: [{
    client_id: env.OIDC_CLIENT_ID,
    client_secret: env.OIDC_CLIENT_SECRET,
    redirect_uris: env.OIDC_REDIRECT_URIS.split(',').filter(Boolean),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: keys.jwks,
  cookies: { keys: keys.cookies },
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    groups: ['groups'],
  },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  pkce: { required: () => false },
  ttl: { AuthorizationCode: Number(env.OIDC_CODE_TTL), AccessToken: 3600, IdToken: 3600, Interaction: 3600, Session: 3600, Grant: 3600 },
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims(use) {
        const { _userinfo_only: only = [], ...claims } = claimsOf(id);
        if (use === 'id_token') for (const name of only) delete claims[name];
        return { ...claims, sub: id };
      },
    };
  },
  // consent is granted without a page: the test client asks only for its own scopes
  async loadExistingGrant(ctx) {
    const id = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    const found = id && (await ctx.oidc.provider.Grant.find(id));
    if (found) return found;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(ctx.oidc.params.scope || 'openid');
    await grant.save();
    return grant;
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
const server = provider.listen(port, '127.0.0.1', () => {
  writeFileSync(`${env.OIDC_PID_FILE}.tmp`, String(process.pid));
  renameSync(`${env.OIDC_PID_FILE}.tmp`, env.OIDC_PID_FILE);
  console.log(`listening on ${issuer}`);
});
server.on('error', (err) => { console.error(err.message); process.exit(1); });
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => { server.closeAllConnections(); server.close(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); });
}
JS
  mv -f "${SERVER_JS}.$$" "$SERVER_JS"
}

watch_owner() {
  # stop the provider once the owner process is gone; detached so it survives this script
  local owner="$1" pid; pid="$(cat "$PIDFILE")"
  nohup setsid bash -c '
    while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
    if kill -0 "$2" 2>/dev/null && grep -q idsync-oidc-server "/proc/$2/cmdline" 2>/dev/null; then kill -TERM "$2"; fi
  ' _ "$owner" "$pid" >/dev/null 2>&1 </dev/null &
}

start() {
  mkdir -p "$DATADIR"
  if [ ! -e "$MARKER" ] && [ -n "$(ls -A "$DATADIR")" ]; then
    fail "$DATADIR is not empty and was not made by this script"
  fi
  touch "$MARKER"
  mkdir -p "${DATADIR}/accounts.d"
  ensure_installed
  if running && answering; then facts; return 0; fi
  port_open 127.0.0.1 "$PORT" && fail "127.0.0.1:${PORT} is in use by another process"
  write_server
  rm -f "$PIDFILE"
  OIDC_PORT="$PORT" OIDC_DATA_DIR="$DATADIR" OIDC_NODE_DIR="$NODE_DIR" OIDC_PID_FILE="$PIDFILE" \
    OIDC_CLIENT_ID="$CLIENT_ID" OIDC_CLIENT_SECRET="$CLIENT_SECRET" \
    OIDC_REDIRECT_URIS="$REDIRECT_URIS" OIDC_CODE_TTL="$CODE_TTL" \
    nohup node "$SERVER_JS" >"$LOG" 2>&1 </dev/null &
  local bg=$! n=0
  # the pid file appears once the server listens; then discovery must answer
  until [ -s "$PIDFILE" ] && answering; do
    n=$((n + 1))
    kill -0 "$bg" 2>/dev/null || { cat "$LOG" >&2; fail "oidc-provider exited during start"; }
    if [ "$n" -gt $((WAIT_S * 10)) ]; then
      kill "$bg" 2>/dev/null || true
      cat "$LOG" >&2
      fail "oidc-provider did not answer within ${WAIT_S}s"
    fi
    sleep 0.1
  done
  if [ -n "${OIDC_OWNER_PID:-}" ]; then watch_owner "$OIDC_OWNER_PID"; fi
  facts
}

stop() {
  [ -s "$PIDFILE" ] || return 0
  local pid n=0; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null && grep -q idsync-oidc-server "/proc/$pid/cmdline" 2>/dev/null; then
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
      n=$((n + 1))
      if [ "$n" -gt 100 ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
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
