#!/usr/bin/env bash
# check_core_purity.sh - the consensus core in node/raft/ must stay a pure
# state machine (DESIGN.md, issue 2): no I/O, no clock, no threads, no
# rand(), no mutable global state. This greps its sources and prints every
# violation as file:line: rule: code. Comments and string literals are
# ignored. Exit 0 when clean, 1 on violations, 2 on usage errors.
#
# Usage: check_core_purity.sh [DIR]   (default: node/raft beside this script)
set -euo pipefail

dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/node/raft"}
if [ ! -d "$dir" ]; then
    echo "core_purity: no such directory: $dir" >&2
    exit 2
fi

mapfile -t files < <(find "$dir" -type f \( -name '*.c' -o -name '*.h' \) | sort)
if [ ${#files[@]} -eq 0 ]; then
    echo "core_purity: no .c or .h files under $dir" >&2
    exit 2
fi

# Prints "LINE:code" for each line of $1 with comments removed (line count
# kept). With blank=1, the contents of string and char literals are blanked
# too, so "time(" inside a message is not taken for a call.
strip() {
    awk -v blank="$2" '
    BEGIN { inblock = 0 }
    {
        line = $0; out = ""; i = 1; n = length(line)
        while (i <= n) {
            c = substr(line, i, 1); c2 = substr(line, i, 2)
            if (inblock) {
                if (c2 == "*/") { inblock = 0; out = out "  "; i += 2 }
                else { out = out " "; i++ }
                continue
            }
            if (c2 == "/*") { inblock = 1; out = out "  "; i += 2; continue }
            if (c2 == "//") { break }
            if (c == "\"" || c == "\047") {
                q = c; out = out c; i++
                while (i <= n) {
                    d = substr(line, i, 1)
                    if (d == "\\") {
                        out = out (blank ? "  " : substr(line, i, 2)); i += 2
                        continue
                    }
                    if (d == q) { break }
                    out = out (blank ? " " : d); i++
                }
                if (i <= n) { out = out q; i++ }
                continue
            }
            out = out c; i++
        }
        printf "%d:%s\n", NR, out
    }' "$1"
}

# Headers that bring in I/O, a clock, threads or the wire format.
re_include='^[0-9]+:[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](nng/[^>"]*|lmdb\.h|protobuf-c/[^>"]*|[^>"]*\.pb-c\.h|pthread\.h|threads\.h|time\.h|sys/time\.h|unistd\.h|stdio\.h)[>"]'
# Calls that read a clock, draw unseeded randomness or block.
re_call='(^|[^[:alnum:]_.>])(time|clock|clock_gettime|gettimeofday|rand|srand|rand_r|random|srandom|drand48|lrand48|getrandom|arc4random|sleep|usleep|nanosleep)[[:space:]]*\('
# Mutable static storage (file scope or function scope), approximated as a
# `static` declaration that is not a function and not const.
re_static='^[0-9]+:[[:space:]]*static[[:space:]]+[^(]*[=;]'
re_static_const='^[0-9]+:[[:space:]]*static[[:space:]]+(inline[[:space:]]+)?const[[:space:]]'

violations=0
report() { # file, rule, "LINE:code" lines
    local f=$1 rule=$2 hits=$3 l
    [ -n "$hits" ] || return 0
    while IFS= read -r l; do
        echo "${f#"$dir"/}:${l%%:*}: $rule: $(echo "${l#*:}" | sed 's/^[[:space:]]*//')"
        violations=$((violations + 1))
    done <<<"$hits"
}

echo "core_purity: checking ${#files[@]} files in $dir"
for f in "${files[@]}"; do
    code=$(strip "$f" 0)
    bare=$(strip "$f" 1)
    report "$f" "forbidden include" "$(grep -E "$re_include" <<<"$code" || true)"
    report "$f" "forbidden call" "$(grep -E "$re_call" <<<"$bare" || true)"
    report "$f" "mutable static" \
        "$(grep -E "$re_static" <<<"$bare" | grep -Ev "$re_static_const" || true)"
done

if [ "$violations" -gt 0 ]; then
    echo "core_purity: FAILED: $violations violation(s) in $dir (the core must do no I/O, read no clock, use no threads, rand() or mutable globals)"
    exit 1
fi
echo "core_purity: OK: ${#files[@]} files clean ($(cd "$dir" && echo "${files[@]#"$dir"/}"))"
