#!/usr/bin/env bash
# Load-test a Scrubber deployment with autocannon without getting the load
# generator's own address banned: one address pushing thousands of requests a
# second is exactly what the filter is there to stop, so the address is
# whitelisted through the admin API for the run and the entry removed after
# it (also on Ctrl-C or an error). An entry that was already on the whitelist
# before the run is left in place.
#
# usage: scripts/loadtest.sh [URL] [autocannon options...]
#        npm run loadtest -- [URL] [autocannon options...]
#   e.g. scripts/loadtest.sh http://127.0.0.1:8080/ -c 50 -d 10
#
# environment:
#   SCRUBBER_ADMIN_URL    admin listener (default http://127.0.0.1:9090)
#   SCRUBBER_ADMIN_TOKEN  bearer token, when admin.token is set
#   LOADTEST_SOURCE       address(es) the proxy sees the load coming from,
#                         space-separated (default: 127.0.0.1, plus ::1 for
#                         "localhost"; required for a non-loopback URL: the
#                         load generator's public address, or a CIDR range no
#                         broader than /16 or /48 for several generators)
set -euo pipefail

URL=${1:-http://127.0.0.1:8080/}
[ $# -gt 0 ] && shift
ADMIN=${SCRUBBER_ADMIN_URL:-http://127.0.0.1:9090}
ADMIN=${ADMIN%/}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE=node; [ -x "$ROOT/node_modules/.bin/node" ] && NODE="$ROOT/node_modules/.bin/node"

host=$("$NODE" -e 'try { console.log(new URL(process.argv[1]).hostname) } catch { process.exit(1) }' "$URL") || { echo "loadtest: not a URL: $URL" >&2; exit 2; }
if [ -n "${LOADTEST_SOURCE:-}" ]; then sources=$LOADTEST_SOURCE
else
  case "$host" in
    localhost) sources="127.0.0.1 ::1" ;;
    127.*) sources=127.0.0.1 ;;
    '[::1]'|::1) sources=::1 ;;
    *) echo "loadtest: $host is not loopback; set LOADTEST_SOURCE to the address Scrubber sees this machine's traffic from" >&2; exit 2 ;;
  esac
fi

auth=()
[ -n "${SCRUBBER_ADMIN_TOKEN:-}" ] && auth=(-H "Authorization: Bearer ${SCRUBBER_ADMIN_TOKEN}")
api() { curl -sS --max-time 10 "${auth[@]}" "$@"; }
enc() { printf '%s' "$1" | sed 's|/|%2F|g'; }

# What is on the whitelist already (never removed by this script).
before=$(api -f "$ADMIN/api/whitelist") || { echo "loadtest: cannot read $ADMIN/api/whitelist (is the admin listener there? token?)" >&2; exit 1; }
added=()
cleanup() {
  local s
  for s in "${added[@]}"; do
    if api -f -X DELETE "$ADMIN/api/whitelist/$(enc "$s")" >/dev/null; then echo "loadtest: removed $s from the whitelist" >&2
    else echo "loadtest: could not remove $s from the whitelist: DELETE $ADMIN/api/whitelist/$(enc "$s")" >&2; fi
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for s in $sources; do
  if "$NODE" -e 'const l = JSON.parse(process.argv[1]).entries; process.exit(l.some((e) => e.ip === process.argv[2]) ? 0 : 1)' "$before" "$s"; then
    echo "loadtest: $s is already whitelisted (left as it is)" >&2
    continue
  fi
  out=$(api -X PUT -H 'content-type: application/json' --data '{"note":"scripts/loadtest.sh (removed when the run ends)"}' -w '\n%{http_code}' "$ADMIN/api/whitelist/$(enc "$s")")
  code=${out##*$'\n'}
  if [ "$code" != 200 ]; then echo "loadtest: whitelisting $s failed ($code): ${out%$'\n'*}" >&2; exit 1; fi
  added+=("$s")
  echo "loadtest: whitelisted $s for this run" >&2
done

if [ -x "$ROOT/node_modules/.bin/autocannon" ]; then AC="$ROOT/node_modules/.bin/autocannon"; else AC="npx --yes autocannon"; fi
# Not exec: the EXIT trap must run after autocannon.
$AC "$@" "$URL"
