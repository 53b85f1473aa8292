#!/usr/bin/env bash
# The README's test command: on a fresh Debian machine it installs and starts whatever
# is missing (services, cargo-nextest, the deployment checkers, podman), then runs
# formatting, lints, the deployment-file checks and every test against real PostgreSQL,
# RabbitMQ and S3, then a real job under the container's constraints and through the
# image the Dockerfile builds. Extra arguments go to `cargo nextest run` (and skip the
# last two).
set -euo pipefail
cd "$(dirname "$0")/.."

# A build cache outside the repository survives fresh clones (CI); any path works.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/deployguard/target}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

step() { printf '\n== %s\n' "$*"; }

step "services"
scripts/services.sh start
scripts/services.sh status
scripts/services.sh sweep-tests

if ! cargo nextest --version >/dev/null 2>&1; then
  step "installing cargo-nextest"
  cargo install cargo-nextest --locked --quiet
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "no import circle between the modules of a crate"
scripts/module-cycles.py

step "tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"

# Tests that restart a shared service (RabbitMQ) are marked #[ignore] so the parallel
# pass above never meets them; they run here, one at a time.
step "tests that restart services (serial)"
cargo nextest run --workspace --locked --no-fail-fast --run-ignored only --test-threads 1 "$@"

# After the tests, which built the CLI it scans them with.
step "deployment files (k8s/, docker-compose.api.yaml, Dockerfile)"
scripts/check-deploy.sh

# The image's runtime constraints (uid 10001, read-only root filesystem, no
# capabilities) with the binaries just built, through a real job.
# Skipped when arguments select a subset of the tests.
if [ $# -eq 0 ]; then
  step "a real job under the container's constraints (scripts/deploy/container-smoke.sh)"
  scripts/deploy/container-smoke.sh
  # The Dockerfile itself, built with podman (unoptimised, to keep CI short), and the
  # same job through the image it makes.
  step "the image: built from the Dockerfile, a real job through it (scripts/deploy/image-check.sh)"
  DG_IMAGE_PROFILE=dev scripts/deploy/image-check.sh
fi
