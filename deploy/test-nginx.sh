#!/usr/bin/env bash
# Checks deploy/nginx.conf for real: nginx (auth_request) in front of the demo upstream, dinggate
# as forward-auth, the mock DingTalk for the login. Needs nginx (apt-get install nginx-light).
# Usage: bash deploy/test-nginx.sh   (builds the release binary; exits non-zero on any failure)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx-light)"; exit 1; }
# DEPLOY_TEST_BIN=path/to/dinggate skips the release build (e.g. target/debug/dinggate).
if [ -z "${DEPLOY_TEST_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${DEPLOY_TEST_BIN:-$PWD/target/release/dinggate}
W=$(mktemp -d)
cleanup() {
  nginx -s stop -c "$W/nginx.conf" 2>/dev/null || true
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- gateway log"; cat "$W/gw.log"; echo "--- nginx error log"; cat "$W/error.log" 2>/dev/null; exit 1; }

# The shipped example, moved to loopback ports and plain http.
sed -e 's/listen 443 ssl;/listen 127.0.0.1:24443;/' -e 's/server_name app.example.com;/server_name 127.0.0.1;/' \
    -e 's#http://127.0.0.1:4180#http://127.0.0.1:24180#g' -e 's#proxy_pass http://127.0.0.1:8080;#proxy_pass http://127.0.0.1:24182;#' \
    deploy/nginx.conf > "$W/site.conf"
cat > "$W/nginx.conf" <<NGX
worker_processes 1;
error_log $W/error.log;
pid $W/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $W;
  proxy_temp_path $W;
  include $W/site.conf;
}
NGX
cat > "$W/gateway.yaml" <<YAML
listen: "127.0.0.1:24180"
public_url: "http://127.0.0.1:24443"
upstream: "http://127.0.0.1:24182"
trust_forwarded_headers: true
dingtalk:
  client_id: "dingmockclientid0001"
  client_secret: "mock-client-secret-0123456789abcdef"
  corp_id: "dingcorp00000001"
  login_url: "http://127.0.0.1:24181"
  api_url: "http://127.0.0.1:24181"
  oapi_url: "http://127.0.0.1:24181"
session:
  signing_key: "nginx-test-signing-key-0123456789abcdef"
routes:
  - path_prefix: /
  - path_prefix: /admin
    allow: { admins: true }
YAML
"$BIN" mock-dingtalk --listen 127.0.0.1:24181 >"$W/mock.log" 2>&1 &
"$BIN" demo-upstream --listen 127.0.0.1:24182 >"$W/up.log" 2>&1 &
"$BIN" run --config "$W/gateway.yaml" >"$W/gw.log" 2>&1 &
for _ in $(seq 50); do curl -fs http://127.0.0.1:24180/_dinggate/healthz >/dev/null && break; sleep 0.1; done
nginx -c "$W/nginx.conf"
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:24443/_dinggate/healthz && break; sleep 0.1; done

JAR="$W/jar"
loc=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' 'http://127.0.0.1:24443/page?a=1&b=2')
[ "$loc" = "302 http://127.0.0.1:24443/_dinggate/start?rd=%2Fpage%3Fa%3D1%26b%3D2" ] || fail "unauthenticated: got '$loc'"
auth=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' "${loc#302 }")
cb=$(curl -s -o /dev/null -w '%{redirect_url}' "${auth}&mock_user=wangwu")
back=$(curl -s -c "$JAR" -b "$JAR" -o /dev/null -w '%{http_code} %{redirect_url}' "$cb")
[ "$back" = "302 http://127.0.0.1:24443/page?a=1&b=2" ] || fail "callback: got '$back'"

echoed=$(curl -s -b "$JAR" -H 'Accept: application/json' -H 'X-DingTalk-UserId: boss' -H 'X-Forwarded-User: evil' \
  -H 'X-Forwarded-Email: evil@example.com' http://127.0.0.1:24443/echo)
python3 - "$echoed" <<'PY' || fail "identity headers: $echoed"
import json, sys
h = json.loads(sys.argv[1])["headers"]
assert h["x-dingtalk-userid"] == ["wangwu"], h
assert h["x-forwarded-user"] == ["Pm4GxT8cVb2NzQ6wLr0HkJsiEiE"], h
assert "x-forwarded-email" not in h, h          # 王五 has no e-mail: the spoofed one is gone too
assert h["x-dingtalk-name"] == ["%E7%8E%8B%E4%BA%94"], h
assert "evil" not in json.dumps(h) and "boss" not in json.dumps(h), h
PY
code=$(curl -s -b "$JAR" -o /dev/null -w '%{http_code}' http://127.0.0.1:24443/admin/x)
[ "$code" = 403 ] || fail "policy: /admin as wangwu got $code"
# Client-sent copies of the headers dinggate reads must not change what is checked: they are
# overwritten by the proxy, or disagree with its own and the check fails closed (never 200).
for spoof in 'X-Forwarded-Uri: /' 'X-Original-URI: /' 'X-Forwarded-Host: other.example' 'X-Forwarded-Method: OPTIONS'; do
  code=$(curl -s -b "$JAR" -H "$spoof" -o /dev/null -w '%{http_code}' http://127.0.0.1:24443/admin/x)
  case "$code" in 403|500) ;; *) fail "spoofed '$spoof' on /admin/x as wangwu got $code" ;; esac
done

# Non-ASCII bytes, raw on the wire (as browsers and scripts can send them): nginx passes
# $request_uri unchanged, and dinggate must decide on the path the app sees (/admin/%C3%A9),
# never on a default. Written by hand: HTTP clients percent-encode such URLs before sending.
SESSION=$(awk '$6 == "_dinggate" { print $7 }' "$JAR")
[ -n "$SESSION" ] || fail "no session cookie in the jar"
raw_status() {  # raw_status PORT TARGET-BYTES(python literal) -> status code
  python3 - "$1" "$2" "$SESSION" <<'PY'
import ast, socket, sys
port, target, session = int(sys.argv[1]), ast.literal_eval(sys.argv[2]), sys.argv[3]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: application/json\r\n"
          b"Cookie: _dinggate=%s\r\nConnection: close\r\n\r\n" % (port, session.encode()))
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b" ", 2)[1].decode())
PY
}
for target in "b'/admin?x=\\xc3\\xa9'" "b'/admin/\\xc3\\xa9'" "b'/admin/\\xc3\\xa9?x=\\xc3\\xa9'" "b'/admin/%C3%A9'"; do
  code=$(raw_status 24443 "$target")
  [ "$code" = 403 ] || fail "non-ASCII: $target as wangwu got $code (want 403)"
done
code=$(raw_status 24443 "b'/docs/\\xc3\\xa9'")
[ "$code" = 200 ] || fail "non-ASCII: /docs/é as wangwu got $code (want 200)"
echo "deploy/nginx.conf works: all 10 checks passed"
