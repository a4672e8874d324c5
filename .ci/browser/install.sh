#!/usr/bin/env bash
# Debian's chromium for the `browser` tests (tests/dashboard/test_browser.py drives it with
# Playwright through executable_path; Playwright downloads no browser of its own).
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root otherwise.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi

log=$(mktemp -t chromium-install.XXXXXX.log)
fail() {
    echo "*** .ci/browser/install.sh: $1; the browser tests will fail. Last lines of $log: ***" >&2
    tail -n 25 "$log" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    echo "*** .ci/browser/install.sh: $CHROMIUM is missing and installing it needs root:" \
         "run 'apt-get install -y chromium' as root ***" >&2
    exit 1
fi
command -v apt-get >/dev/null || { echo "*** .ci/browser/install.sh: no apt-get here; install Debian's chromium at $CHROMIUM by hand ***" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
echo "installing Debian's chromium (about 500 MB) ..." >&2
if ! apt-get install -y chromium >"$log" 2>&1; then
    # stale package lists: refresh them once and try again
    apt-get update >>"$log" 2>&1 || fail "apt-get update failed"
    apt-get install -y chromium >>"$log" 2>&1 || fail "apt-get install chromium failed"
fi
[ -x "$CHROMIUM" ] || fail "apt-get installed chromium but $CHROMIUM is not there"
"$CHROMIUM" --version >>"$log" 2>&1 || fail "$CHROMIUM does not start"
echo "installed $("$CHROMIUM" --version 2>/dev/null | tail -n 1)" >&2
rm -f "$log"
