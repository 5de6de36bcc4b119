#!/usr/bin/env bash
# Instructions per call through each layer, counted by callgrind: stable on a noisy machine,
# where timings move by ±15 % between runs. Each contender runs twice, with FEW and MANY calls;
# the difference divided by MANY - FEW is its cost per call, with start-up and construction
# (and the warm-up of the first FEW calls) cancelled out.
#
#   benches/callgrind.sh                # every contender
#   benches/callgrind.sh bulkhead       # the contenders whose name contains "bulkhead"
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

instructions() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$probe" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

printf '%-36s %14s\n' contender 'instr/call'
for contender in $("$probe" list); do
    [[ -n $filter && $contender != *"$filter"* ]] && continue
    few=$(instructions "$contender" "$FEW")
    many=$(instructions "$contender" "$MANY")
    awk -v c="$contender" -v a="$few" -v b="$many" -v n=$((MANY - FEW)) \
        'BEGIN { printf "%-36s %14.1f\n", c, (b - a) / n }'
done
