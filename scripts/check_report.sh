#!/usr/bin/env bash
# Render a comparison's report.html in a real headless browser (Debian's chromium) to a PNG, so a
# person can look at what a reader of the report sees. Installs chromium as root when missing.
# Usage: scripts/check_report.sh REPORT_HTML [OUT_PNG]     (default OUT_PNG: REPORT_HTML with .png)
set -euo pipefail
html="${1:?usage: scripts/check_report.sh REPORT_HTML [OUT_PNG]}"
png="${2:-${html%.html}.png}"
[ -f "$html" ] || { echo "check_report: no such file: $html" >&2; exit 2; }
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "check_report: needs Debian's chromium: apt-get install -y chromium" >&2; exit 2
    fi
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# the flags keep a headless root run from reaching for the network or a GPU
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" --window-size=1200,4200 \
    --screenshot="$png" "file://$(realpath "$html")" 2>/dev/null
[ -s "$png" ] || { echo "check_report: chromium wrote no screenshot" >&2; exit 1; }
python - "$png" <<'PY'
import struct, sys
head = open(sys.argv[1], "rb").read(24)
assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", head[16:24])
print(f"check_report: {sys.argv[1]} ({w} x {h})")
PY
