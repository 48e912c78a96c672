#!/bin/sh
# Screenshots of the built site in headless Chromium (Debian's `chromium`), into docs/_static/screenshots/.
# Usage: make docs && sh docs/screenshots.sh
set -e
cd "$(dirname "$0")/_build/html"
python3 -m http.server 8765 >/dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
sleep 1
for page in "index.html:front:1400,1000" "user-guide/margins.html:margins:1400,3400" \
            "generated/dmlr.MNLogitResults.get_margeff.html:api:1400,1000" "search.html?q=get_margeff:search:1400,1000"; do
    url=${page%%:*}; rest=${page#*:}; name=${rest%%:*}; size=${rest#*:}
    profile=$(mktemp -d)
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
        --window-size="$size" --virtual-time-budget=4000 --screenshot="../../_static/screenshots/$name.png" \
        "http://127.0.0.1:8765/$url" >/dev/null 2>&1
    rm -rf "$profile"
done
