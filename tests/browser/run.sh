#!/bin/sh
# Runs page_test.mjs when Node.js, its npm packages (npm ci in this folder) and
# Chromium are there; otherwise skips (exit 77), except under CI, where a
# missing piece fails the test.
#   run.sh FLAMINGO MODEL_DIR OUT_DIR
here=$(dirname "$0")
chromium=${CHROMIUM:-/usr/bin/chromium}
missing=""
command -v node >/dev/null 2>&1 || missing="$missing node (apt-get install nodejs npm)"
[ -d "$here/node_modules/playwright-core" ] || missing="$missing playwright-core (npm ci --prefix $here)"
[ -x "$chromium" ] || missing="$missing $chromium (apt-get install chromium)"
if [ -n "$missing" ]; then
  if [ -n "${CI:-}" ]; then
    echo "browser test: missing:$missing" >&2
    exit 1
  fi
  echo "browser test skipped, missing:$missing" >&2
  exit 77
fi
exec node "$here/page_test.mjs" "$@"
