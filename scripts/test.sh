#!/usr/bin/env bash
# Run every check and every test of the workspace, the way CI does.
#
#   bash scripts/test.sh
#
# It installs and starts what the tests need (OpenLDAP slapd, Samba as an AD domain
# controller, PostgreSQL 15, oidc-provider on Node.js, scim2-server with scim2-tester,
# json-server with a generated HR data set)
# through scripts/services/*.sh, exports their connection
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

# Each service script installs the Debian packages it needs (apt-get) on first use.

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
start_service oidc-provider
start_service scim2
start_service json-server

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo test (all crates, all features)"
cargo test --workspace --all-features --no-fail-fast

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

step "all checks passed"
