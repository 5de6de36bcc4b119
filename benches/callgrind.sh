#!/usr/bin/env bash
# Instructions per call through each layer, counted by callgrind: stable on a noisy machine,
# where timings move by ±15 % between runs. Each contender runs twice, with FEW and MANY calls;
# the difference divided by MANY - FEW is its cost per call, with start-up and construction
# (and the warm-up of the first FEW calls) cancelled out.
#
#   benches/callgrind.sh                # every contender
#   benches/callgrind.sh bulkhead       # the contenders whose name contains "bulkhead"
#   PROBE_RECORDER=before benches/callgrind.sh   # with a metrics recorder installed first
#                                       # (`late`: installed after the contender is built)
#   FUNCTIONS=1 benches/callgrind.sh timeout-pending/seawall
#                                       # and each one's instructions per call by function
#
# Needs valgrind. Builds the probe without the lab's tokio `test-util` (see RESULTS.md).
set -euo pipefail

FEW=${FEW:-2000}
MANY=${MANY:-22000}
filter=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}

cargo build --quiet --release --manifest-path "$root/Cargo.toml" -p seawall-bench \
    --no-default-features --bin probe
probe="$target/release/probe"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

instructions() {
    valgrind --tool=callgrind --callgrind-out-file="$out/$2" "$probe" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

# Exclusive instructions per call by function: the same difference as the totals, by name.
functions() {
    for n in "$FEW" "$MANY"; do
        callgrind_annotate --threshold=100 --auto=no "$out/$n" 2>/dev/null \
            | awk -v n="$n" '/^ *[0-9,]+ .*:/ { c = $1; gsub(",", "", c); $1 = "";
                  sub(/^ *(\([^)]*\))? */, ""); print n "\t" c "\t" $0 }'
    done | awk -F'\t' -v few="$FEW" -v d=$((MANY - FEW)) '
        { cost[$3] += ($1 == few ? -$2 : $2) }
        END { for (f in cost) if (cost[f] / d >= 0.5 || cost[f] / d <= -0.5)
                  printf "%10.1f  %s\n", cost[f] / d, substr(f, 1, 140) }' \
        | sort -rn
}

printf '%-36s %14s\n' contender 'instr/call'
for contender in $("$probe" list); do
    [[ -n $filter && $contender != *"$filter"* ]] && continue
    few=$(instructions "$contender" "$FEW")
    many=$(instructions "$contender" "$MANY")
    awk -v c="$contender" -v a="$few" -v b="$many" -v n=$((MANY - FEW)) \
        'BEGIN { printf "%-36s %14.1f\n", c, (b - a) / n }'
    if [[ -n ${FUNCTIONS:-} ]]; then functions; fi
done
