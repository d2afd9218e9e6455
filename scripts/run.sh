#!/usr/bin/env bash
# Set up (first time) and run the IVR on its embedded default:
# SQLite in var/, SIP on 127.0.0.1:5060, dialplans/12345.toml, config.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/ivr --config "${IVR_CONFIG:-config.toml}" serve
