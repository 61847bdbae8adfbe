#!/usr/bin/env bash
# The soak (docs/BENCHMARKS.md "Soak"): the release server under load for SECONDS while its
# server child, crash monitor and standalone collector are SIGKILLed at random moments, with
# 32 KiB journal segments so kills land on rotations; then the last boot runs 5.5 minutes
# unkilled (the verdict needs 5) and every check runs (scripts/soak.py says which).
# Two soaks run side by side: "control" must not say LEAK, "leak" (the leak fault, 1 MiB a turn
# of one conversation, armed again on every boot) must. Loopback only, bounded in time:
# about SECONDS + 6 minutes.
#
#   scripts/soak.sh [SECONDS]        (default 180; CI runs 180, docs/BENCHMARKS.md records 1800)
#
# Needs python3 (the load, the kills and the checks are scripts/soak.py) and 127.0.0.1.
#
# Exit 0 only when both soaks pass every check. Summaries: $SOAK_OUT (default
# target/soak)/{control,leak}.json and .log; a failed soak keeps its var dir (its path is logged).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-180}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "soak: SECONDS must be a whole number, not '$seconds'" >&2; exit 2; }
target="${CARGO_TARGET_DIR:-target}"
out="${SOAK_OUT:-$target/soak}"
mkdir -p "$out"

# SOAK_NO_BUILD=1: the binaries are built already (.ci/run builds them, then runs this beside
# other cargo commands, which would hold cargo's lock on the target directory).
if [[ -z "${SOAK_NO_BUILD:-}" ]]; then
    # The first command is the release-build tests' own (server/tests/common/nested_cargo.rs),
    # so neither rebuilds what the other built.
    cargo build --release -q -p dispatch-server -p dispatch-cli --bins
    cargo build --release -q -p dispatch-collector --bins
fi
bin="$target/release"
seed="${SOAK_SEED:-$(date +%s)}"

python3 scripts/soak.py --bin "$bin" --seconds "$seconds" --seed "$seed" \
    --json "$out/control.json" >"$out/control.log" 2>&1 &
control=$!
python3 scripts/soak.py --bin "$bin" --seconds "$seconds" --seed "$((seed + 1))" --leak-mb 1 \
    --json "$out/leak.json" >"$out/leak.log" 2>&1 &
leak=$!
status=0
wait "$control" || status=1
wait "$leak" || status=1
cat "$out/control.log" "$out/leak.log"
if ((status)); then
    echo "soak: FAILED (logs above; $out)" >&2
else
    echo "soak: both soaks passed every check ($out/control.json, $out/leak.json)"
fi
exit "$status"
