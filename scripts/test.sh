#!/usr/bin/env bash
# Sets everything up with the test tools, lints, then runs the whole test suite; extra arguments go to pytest.
# Success needs at least one test that passed: pytest exits 5 when it collected nothing (set -e propagates it),
# and a run where every test was skipped or deselected fails here too. The last line says which it was.
set -euo pipefail
cd "$(dirname "$0")/.."
junit=$(mktemp "${TMPDIR:-/tmp}/ltx2-edge-junit.XXXXXX")
verdict=""
chromium_pid=""
apt_log=""
finish() {
  local rc=$?
  # A chromium install still running (the setup failed beside it) is waited for: dpkg stopped midway breaks apt.
  [ -z "$chromium_pid" ] || wait "$chromium_pid" 2>/dev/null || true
  rm -f "$junit" "$apt_log"
  if [ -n "$verdict" ]; then
    echo "scripts/test.sh: $verdict"
  elif [ "$rc" -eq 5 ]; then
    echo "scripts/test.sh: FAILED: pytest collected no tests (exit 5)" >&2
  else
    echo "scripts/test.sh: FAILED (exit $rc); the first error is above" >&2
  fi
}
trap finish EXIT
start=$SECONDS
# The web page test drives a real browser: Debian's chromium (Playwright's own browser download is not used).
install_chromium() {
  local sudo
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; } ||
    echo "scripts/test.sh: could not install chromium; the page test will be skipped" >&2
}
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ]; then  # as root (CI) beside the setup, its output held until the setup is done
    apt_log=$(mktemp "${TMPDIR:-/tmp}/ltx2-edge-apt.XXXXXX")
    install_chromium >"$apt_log" 2>&1 &
    chromium_pid=$!
  else  # sudo may ask for a password: in the foreground
    install_chromium
  fi
fi
bash scripts/setup.sh --test
if [ -n "$chromium_pid" ]; then
  wait "$chromium_pid"
  chromium_pid=""
  cat "$apt_log" >&2
fi
.venv/bin/ruff check src tests bench scripts
.venv/bin/ruff format --check src tests bench scripts
# The Ray fleet tests (tests/test_ray_fleet.py) skip only when LTX2_EDGE_SKIP_RAY=1; the full suite runs them, so a
# missing or broken ray extra fails here instead of passing as a skip.
unset LTX2_EDGE_SKIP_RAY
# Two workers (pytest-xdist) for CI's 2 cores, each test file whole on one of them: a file's module fixtures (a gloo
# launch, the Ray cluster) start once, and its tests never run beside each other.
.venv/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --junitxml="$junit" "$@"
# pytest's own counts (JUnit XML; xfailed counts as skipped there): skipped tests are not tests that ran.
read -r tests skipped < <(.venv/bin/python -c '
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root if root.tag == "testsuite" else root.find("testsuite")
print(suite.get("tests"), suite.get("skipped"))' "$junit")
if [ "$((tests - skipped))" -lt 1 ]; then
  verdict="FAILED: no test ran ($tests collected, $skipped skipped)"
  exit 5
fi
verdict="OK: $((tests - skipped)) tests passed, $skipped skipped; setup, lint and tests took $((SECONDS - start)) s"
