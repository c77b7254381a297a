#!/usr/bin/env bash
# The full fault suite in one command (root, Debian 12, ~6 min on 2 cores):
#
#   sudo tests/fault/run_suite.sh [BUILD_DIR]
#
# Builds BUILD_DIR (default build-test, configured like deploy/test.sh if it
# does not exist yet: sanitizers on), runs every scenario (ctest -C fault
# -L fault, one at a time), writes BUILD_DIR/fault-junit.xml, and prints
# each scenario's measured figures (the TIMING lines). Exits with ctest's
# status. The quick subset alone: ctest --test-dir BUILD_DIR -L fault-quick.
set -uo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-test}

if [ ! -f "$build/CMakeCache.txt" ]; then
    ./deploy/install-deps.sh || exit 1
    cmake -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g" -DSKEIN_SANITIZE=ON \
        -DSKEIN_WERROR=ON -DSKEIN_BIN_DIR="$PWD/$build/bin" || exit 1
fi
cmake --build "$build" -j2 || exit 1

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
log="$build/fault-suite.log"
ctest --test-dir "$build" -C fault -L fault -V --output-junit fault-junit.xml >"$log" 2>&1
status=$?
grep -E '^ *[0-9]+/[0-9]+ Test' "$log"
echo
echo "Measured figures:"
sed -n 's/^[0-9]*: TIMING /  /p' "$log"
echo
grep -E 'tests passed|Total Test time' "$log"
echo "full output: $log; JUnit: $build/fault-junit.xml"
exit "$status"
