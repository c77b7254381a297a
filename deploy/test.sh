#!/usr/bin/env bash
# Sets up and runs every test (Debian 12, run as root):
#   1. installs the Debian packages (deploy/install-deps.sh, idempotent);
#   2. configures build-test/ with AddressSanitizer + UndefinedBehaviorSanitizer
#      and warnings as errors, assertions kept on;
#   3. builds it and runs ctest (JUnit report in build-test/junit.xml).
# Exits with ctest's status.
#
# The test build puts its binaries in build-test/bin (SKEIN_BIN_DIR), so it
# never overwrites the release binaries that deploy/run.sh puts in build/bin.
set -euo pipefail
cd "$(dirname "$0")/.."

./deploy/install-deps.sh

# RelWithDebInfo flags without -DNDEBUG: optimized, but assert() stays on.
cmake -B build-test \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g" \
    -DSKEIN_SANITIZE=ON \
    -DSKEIN_WERROR=ON \
    -DSKEIN_BIN_DIR="$PWD/build-test/bin"
cmake --build build-test -j2

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp:print_suppressions=0}

status=0
ctest --test-dir build-test --output-on-failure --output-junit junit.xml \
    -j2 || status=$?
if [ "$status" -ne 0 ]; then
    echo "test.sh: ctest failed with status $status (JUnit report: build-test/junit.xml)" >&2
fi
exit "$status"
