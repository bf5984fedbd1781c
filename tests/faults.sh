#!/usr/bin/env bash
# The fault suite (P7), full size, in one command: `tests/faults.sh` from the repository root.
#
# The same test binaries run in the normal test run (CI) at a smaller size; this script runs them
# at the sizes in docs/benchmarks.md, "Faults": 1,000,000 fuzzed frames, 100,000 stack captures,
# 30 s of each client fault (64 clients that never read, clients that send garbage).
# Each binary is bounded by `timeout` (a hang fails the run instead of stalling it), and every
# binary runs even when an earlier one fails (`--no-fail-fast`). Extra arguments go to cargo
# test's test binaries (e.g. `--nocapture` to see each test's figures).
set -euo pipefail
cd "$(dirname "$0")/.."

export STALLSCOPE_FUZZ_FRAMES="${STALLSCOPE_FUZZ_FRAMES:-1000000}"
export STALLSCOPE_SOAK_CAPTURES="${STALLSCOPE_SOAK_CAPTURES:-100000}"
export STALLSCOPE_FAULT_SECS="${STALLSCOPE_FAULT_SECS:-30}"

# Build first, outside the time bound.
cargo test --release -p stallscope-tests --test faults --test faults_threads --test faults_signal --test faults_runtimes \
  --test fuzz_frames --test soak --no-run
cargo test --release -p stallscope-wire --test fuzz --no-run

timeout 1200 cargo test --release --no-fail-fast -p stallscope-tests \
  --test faults --test faults_threads --test faults_signal --test faults_runtimes --test fuzz_frames --test soak \
  -- "$@"
timeout 600 cargo test --release -p stallscope-wire --test fuzz -- "$@"
