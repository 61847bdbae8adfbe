#!/usr/bin/env bash
# Runs the collector benchmarks with their anchors (sqlite3 .import, sqlite-utils insert --nl)
# in the same run. Installs sqlite-utils with pip when it is missing.
# Usage: collector/benches/anchors.sh   (from the workspace root; env as in benches/ingest.rs)
set -euo pipefail
if ! command -v sqlite-utils >/dev/null 2>&1; then
    pip install --quiet sqlite-utils || pip install --quiet --break-system-packages sqlite-utils
fi
command -v /usr/bin/sqlite3 >/dev/null || { echo "needs /usr/bin/sqlite3 (apt-get install sqlite3)" >&2; exit 2; }
exec cargo bench -p dispatch-collector --bench ingest
