#!/usr/bin/env bash
# Sets everything up, then runs the demo: the tiny random-weight model makes an MP4 with sound.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ltx2-edge demo "$@"
