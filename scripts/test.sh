#!/usr/bin/env bash
# Set up everything (Debian packages, venv) and run lint, types and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
IVR_SETUP_FOR_TESTS=1 ./scripts/setup.sh
echo "== ruff"; .venv/bin/ruff check ivr tests bench
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/pytest -q -p no:cacheprovider "$@"
