#!/usr/bin/env bash
# Run every check and every test of the workspace, the way CI does.
#
#   bash scripts/test.sh
#
# It installs and starts what the tests need (OpenLDAP slapd, Samba as an AD domain
# controller, PostgreSQL 15) through scripts/services/*.sh, exports their connection
# facts for the tests, then runs: cargo fmt --check, cargo clippy -D warnings, all tests,
# and cargo doc with warnings denied. The services are stopped on exit.
#
# Tests that need a server also start it themselves when these variables are missing,
# and fail loudly when it cannot start: nothing passes by being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

DATA="${IDSYNC_TEST_DATA:-$ROOT/target/test-services}"
mkdir -p "$DATA"

STARTED=()
cleanup() {
  for s in "${STARTED[@]}"; do
    bash "$ROOT/scripts/services/$s.sh" stop "$DATA/$s" >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT

# One apt transaction for every package the services need (each script would otherwise
# install its own, one after the other).
need=()
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need+=(slapd ldap-utils)
command -v ldapsearch >/dev/null 2>&1 || need+=(ldap-utils)
[ -x /usr/sbin/samba ] || need+=(samba samba-ad-dc winbind krb5-user)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

start_service() {
  local name=$1
  step "starting $name"
  local out
  out=$(bash "$ROOT/scripts/services/$name.sh" start "$DATA/$name")
  STARTED+=("$name")
  # KEY=VALUE lines without spaces: safe to export
  while IFS= read -r line; do
    case "$line" in
      [A-Z_]*=*) export "${line?}" ;;
    esac
  done <<<"$out"
}

start_service openldap
start_service samba-ad
start_service postgres

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (all crates, all features)"
cargo test --workspace --all-features --no-fail-fast

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

step "all checks passed"
