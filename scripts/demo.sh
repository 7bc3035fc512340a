#!/usr/bin/env bash
# Sets everything up and starts the demo: SQLite, demo workspace, console + API on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/shequn demo "$@"
