#!/usr/bin/env bash
# Proxy fast-path benchmark: wrk against the release binary, direct vs through dinggate.
# Usage: bash bench/run.sh [duration] [connections]     (needs wrk: apt-get install wrk)
# Starts three separate processes on loopback: mock DingTalk, demo upstream, gateway; logs in
# once through the mock with curl, then loads an authenticated GET with the session cookie.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-15s}
CONN=${2:-64}
BIN=target/release/dinggate
cargo build --release --quiet
WORK=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

$BIN mock-dingtalk --listen 127.0.0.1:14181 >"$WORK/mock.log" 2>&1 &
$BIN demo-upstream --listen 127.0.0.1:14182 >"$WORK/upstream.log" 2>&1 &
cat >"$WORK/gateway.yaml" <<YAML
listen: "127.0.0.1:14180"
public_url: "http://127.0.0.1:14180"
upstream: "http://127.0.0.1:14182"
dingtalk:
  client_id: "dingmockclientid0001"
  client_secret: "mock-client-secret-0123456789abcdef"
  corp_id: "dingcorp00000001"
  login_url: "http://127.0.0.1:14181"
  api_url: "http://127.0.0.1:14181"
  oapi_url: "http://127.0.0.1:14181"
session:
  signing_key: "benchmark-signing-key-0123456789abcdef"
YAML
$BIN run --config "$WORK/gateway.yaml" >"$WORK/gateway.log" 2>&1 &
GW_PID=$!
for _ in $(seq 50); do curl -fs http://127.0.0.1:14180/_dinggate/healthz >/dev/null && break; sleep 0.1; done

# Log in as zhangsan through the mock (what a browser does, hop by hop).
JAR="$WORK/jar"
auth=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:14180/_dinggate/start?rd=/")
cb=$(curl -s -o /dev/null -w '%{redirect_url}' "${auth}&mock_user=zhangsan")
curl -s -c "$JAR" -b "$JAR" -o /dev/null "$cb"
COOKIE=$(awk '$6=="_dinggate"{print $7}' "$JAR")
[ -n "$COOKIE" ] || { echo "login failed"; cat "$WORK/gateway.log"; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: _dinggate=$COOKIE" -H 'Accept: application/json' http://127.0.0.1:14180/echo)
[ "$code" = 200 ] || { echo "authenticated request got $code"; exit 1; }

echo "== direct to upstream (baseline), $CONN connections, $DUR"
wrk -t2 -c"$CONN" -d"$DUR" --latency -H 'Accept: application/json' http://127.0.0.1:14182/echo
echo "== through dinggate (JWT check + header rewrite + pooled upstream), $CONN connections, $DUR"
wrk -t2 -c"$CONN" -d"$DUR" --latency -H "Cookie: _dinggate=$COOKIE" -H 'Accept: application/json' http://127.0.0.1:14180/echo
echo "== gateway memory after the run"
grep -E 'VmRSS|VmHWM' /proc/$GW_PID/status
echo "== unauthenticated requests (302 to login), $CONN connections, $DUR"
wrk -t2 -c"$CONN" -d"$DUR" -H 'Accept: text/html' http://127.0.0.1:14180/page
grep -E 'VmRSS|VmHWM' /proc/$GW_PID/status
