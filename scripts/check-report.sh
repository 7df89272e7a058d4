#!/usr/bin/env bash
# Checks a folder written by `pneumo evaluate --report`: every file is there, report.html embeds
# every plot and references nothing outside itself, and headless Chromium can render it. The
# screenshot (REPORT_DIR/screenshot.png unless given) is for a person to look at: every plot
# drawn, every label legible.
#
#   scripts/check-report.sh REPORT_DIR [SCREENSHOT]
#
# REPORT_HEIGHT sets the window height in pixels (default 8000, enough for the whole report;
# 4000 shows its first half). Chromium comes from `apt-get install -y chromium`.
set -euo pipefail
dir=${1:?usage: check-report.sh REPORT_DIR [SCREENSHOT]}
shot=${2:-$dir/screenshot.png}
height=${REPORT_HEIGHT:-8000}
html=$dir/report.html
plots=(roc precision-recall confusion reliability histogram)

fail() {
    echo "check-report: $*" >&2
    exit 1
}

for file in report.html metrics.json; do
    [[ -s $dir/$file ]] || fail "$dir/$file is missing or empty"
done
for plot in "${plots[@]}"; do
    for extension in svg png; do
        [[ -s $dir/$plot.$extension ]] || fail "$dir/$plot.$extension is missing or empty"
    done
    grep -q "<figure id=\"$plot\">" "$html" || fail "report.html does not embed $plot"
done
svgs=$(grep -o '<svg ' "$html" | wc -l)
[[ $svgs -eq ${#plots[@]} ]] || fail "report.html holds $svgs inline SVGs, not ${#plots[@]}"

# Anything the page could fetch: a URL, a protocol-relative source, a stylesheet or import,
# a url() that is not a data: URI, a script, an image or a frame.
if grep -noP 'https?://|(src|href)=["\x27]//|<link|@import|url\((?!["\x27]?data:)|<script|<img|<iframe' "$html"; then
    fail "report.html references something outside itself (see the lines above)"
fi

browser=""
for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" > /dev/null; then
        browser=$candidate
        break
    fi
done
[[ -n $browser ]] || fail "no Chromium found; install it with: apt-get install -y chromium"

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
timeout 180 "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --screenshot="$shot" --window-size="1200,$height" \
    "file://$(realpath "$html")" 2> "$profile/chromium.log" ||
    fail "Chromium could not render the report: $(tail -5 "$profile/chromium.log")"
[[ -s $shot ]] || fail "Chromium wrote no screenshot"
echo "report OK: ${#plots[@]} plots embedded, nothing external; screenshot $shot"
