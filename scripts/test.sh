#!/usr/bin/env bash
# Sets everything up with the test tools, lints, then runs the whole test suite.
# pytest exits 5 when no test ran: that is a failure here, like any other non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
.venv/bin/python -m pytest -q "$@"
