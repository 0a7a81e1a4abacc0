#!/usr/bin/env bash
# Run every check and every test of the workspace, the way CI does.
#
#   bash scripts/test.sh
#
# It installs and starts what the tests need (OpenLDAP slapd, Samba as an AD domain
# controller, PostgreSQL 15, oidc-provider on Node.js, scim2-server with scim2-tester,
# json-server with a generated HR data set, a Standard Webhooks receiver on Python's
# reference library standardwebhooks)
# through scripts/services/*.sh, exports their connection
# facts for the tests, then runs: cargo fmt --check, cargo clippy -D warnings, cargo doc
# with warnings denied, and all tests. The services are stopped on exit.
#
# Tests that need a server also start it themselves when these variables are missing,
# and fail loudly when it cannot start: nothing passes by being skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

# Each step also prints the free disk, so a "No space left on device" is explained in the log.
step() {
  printf '\n==> %s\n' "$*"
  df -h "$ROOT" 2>/dev/null | awk 'NR == 2 { print "    (disk: " $4 " free of " $2 ")" }' || true
}

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
# A clean build gains nothing from incremental caches; they would double the disk the
# workspace's own crates take (CI's machine has run out of disk with them).
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}

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
start_service webhook-receiver

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

# clippy and doc keep metadata-only builds the tests cannot use; on a machine short of disk
# they go before the test build, so the peak is one build, not three.
free_kb=$(df -Pk "$ROOT" 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((12 * 1024 * 1024)) ]; then
  step "less than 12 GiB free: cargo clean --profile dev before the test build"
  cargo clean --profile dev
fi

step "cargo test (all crates, all features)"
cargo test --workspace --all-features --no-fail-fast

step "all checks passed"
