#!/usr/bin/env sh
# Make sure a headless Chromium is there for tests/e2e/test_html_report.py (report.html in a real
# browser). Found ($HWSIM_CHROMIUM, or chromium / chromium-browser / google-chrome on PATH):
# nothing to do. Missing, as root with apt-get (a fresh CI machine): install Debian's chromium.
# Otherwise say how to get it; under CI (CI set) that is an error, as the test would fail.
set -eu

for name in ${HWSIM_CHROMIUM:-} chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$name" >/dev/null 2>&1; then
        exit 0
    fi
done

in_ci() {
    case "$(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]')" in
        ""|0|false|no) return 1 ;;
        *) return 0 ;;
    esac
}

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: installing chromium with apt-get (for the report.html browser test)"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -q && apt-get install -y -q --no-install-recommends chromium; then
        exit 0
    fi
    echo "ensure-chromium: apt-get could not install chromium" >&2
else
    echo "ensure-chromium: no chromium found, and not root with apt-get to install it" >&2
fi
echo "ensure-chromium: install Chromium (Debian: apt-get install chromium) or set HWSIM_CHROMIUM;" \
     "the report.html browser test skips without it (and fails under CI)" >&2
if in_ci; then
    exit 1
fi
exit 0
