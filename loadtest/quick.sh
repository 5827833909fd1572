#!/usr/bin/env bash
# `artillery quick --count 100 --num 50 ws://HOST:PORT` — the command a
# newcomer tries first (artillery drops the path, so it asks for `/`)
# against a fresh roomcast in dev mode; fails unless every virtual user
# completed. CI runs it (.ci/run); by hand:
#
#   bash loadtest/quick.sh [ARTILLERY] [ROOMCAST]
#
# ARTILLERY defaults to `artillery` on PATH (install it with
# `PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install -g artillery`: its package
# otherwise downloads a browser), ROOMCAST to target/release/roomcast.
set -euo pipefail
artillery="${1:-artillery}"
roomcast="${2:-target/release/roomcast}"
work="$(mktemp -d)"
"$roomcast" --listen 127.0.0.1:0 --log-level warn >"$work/stdout" 2>"$work/stderr" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
    addr="$(sed -n 's/^roomcast listening on //p' "$work/stdout")"
    [ -n "$addr" ] && break
    sleep 0.1
done
[ -n "$addr" ] || { echo "roomcast did not start: $(cat "$work/stderr")" >&2; exit 1; }
"$artillery" quick --count 100 --num 50 --output "$work/report.json" "ws://$addr" | sed -n '/Summary report/,$p'
node -e '
const c = require(process.argv[1]).aggregate.counters;
const [done, failed] = [c["vusers.completed"] ?? 0, c["vusers.failed"] ?? 0];
if (done !== 100 || failed !== 0) {
  console.error(`artillery quick: ${done} of 100 virtual users completed, ${failed} failed`);
  process.exit(1);
}
console.log("artillery quick: 100 of 100 virtual users completed");
' "$work/report.json"
