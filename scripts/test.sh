#!/usr/bin/env bash
# Runs the whole test suite: on SQLite, then on PostgreSQL when it is reachable
# (SHEQUN_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export SHEQUN_DATA_DIR=${SHEQUN_DATA_DIR:-$(mktemp -d)}
.venv/bin/ruff check src tests bench
.venv/bin/lint-imports
echo "== tests on SQLite =="
.venv/bin/python -m pytest "$@"
PG=${SHEQUN_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
if .venv/bin/python - "$PG" <<'PY'
import sys, psycopg
try:
    psycopg.connect(sys.argv[1], connect_timeout=3).close()
except Exception:
    sys.exit(1)
PY
then
  echo "== tests on PostgreSQL =="
  DATABASE_URL=$PG SHEQUN_TEST_POSTGRES_URL=$PG .venv/bin/python -m pytest -p no:cacheprovider "$@"
else
  echo "PostgreSQL not reachable at $PG: PostgreSQL run skipped"
fi
