#!/usr/bin/env bash
# Checks deploy/nginx.conf for real: nginx (auth_request) in front of the demo upstream, dinggate
# as forward-auth, the mock DingTalk for the login. Needs nginx (apt-get install nginx-light),
# openssl, curl and python3.
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

main_conf() {  # main_conf SITE-FILE: an nginx.conf whose http block includes SITE-FILE
  cat <<NGX
worker_processes 1;
error_log $W/error.log;
pid $W/nginx.pid;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $W;
  proxy_temp_path $W;
  include $1;
}
NGX
}

# The shipped file passes nginx -t as it is, but for the placeholder certificate paths, which point
# at a self-signed certificate made here.
command -v openssl >/dev/null || { echo "openssl is not installed (apt-get install openssl)"; exit 1; }
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=app.example.com \
  -keyout "$W/app.key" -out "$W/app.pem" 2>"$W/openssl.log" || { cat "$W/openssl.log"; exit 1; }
sed -e "s#/etc/ssl/certs/app.example.com.pem#$W/app.pem#" -e "s#/etc/ssl/private/app.example.com.key#$W/app.key#" \
  deploy/nginx.conf > "$W/shipped.conf"
[ "$(diff deploy/nginx.conf "$W/shipped.conf" | grep -c '^>')" = 2 ] || fail "the certificate placeholders were not found"
main_conf "$W/shipped.conf" > "$W/nginx-t.conf"
nginx -t -q -c "$W/nginx-t.conf" 2>"$W/nginx-t.log" || { cat "$W/nginx-t.log"; fail "nginx -t refuses deploy/nginx.conf"; }

# The shipped example, moved to loopback ports and plain http.
sed -e 's/listen 443 ssl;/listen 127.0.0.1:24443;/' -e 's/server_name app.example.com;/server_name 127.0.0.1;/' \
    -e 's#http://127.0.0.1:4180#http://127.0.0.1:24180#g' -e 's#proxy_pass http://127.0.0.1:8080;#proxy_pass http://127.0.0.1:24182;#' \
    "$W/shipped.conf" > "$W/site.conf"
main_conf "$W/site.conf" > "$W/nginx.conf"
cat > "$W/gateway.yaml" <<YAML
listen: "127.0.0.1:24180"
public_url: "http://127.0.0.1:24443"
upstream: "http://127.0.0.1:24182"
trusted_proxies: [127.0.0.1]
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
# Every identity header in every spelling a PHP/CGI/WSGI app reads as the same variable: each
# "-" as "-" or "_", in any case (hyper, behind, refuses more than 100 headers: one of each, and
# the all-underscore one in lower case too). None may reach the app; the real identity must.
IDENTITY="X-Forwarded-User X-Forwarded-Email X-Forwarded-Preferred-Username X-DingTalk-UnionId X-DingTalk-Name X-DingTalk-CorpId X-DingTalk-UserId X-DingTalk-Departments X-DingTalk-Title"
spoofs=()
for name in $IDENTITY; do
  spellings=$(python3 - "$name" <<'PY'
import itertools, sys
parts = sys.argv[1].split("-")
for seps in itertools.product("-_", repeat=len(parts) - 1):
    s = parts[0] + "".join(sep + p for sep, p in zip(seps, parts[1:]))
    print(s if "_" in s else s.upper())
    if "-" not in s:
        print(s.lower())
PY
)
  for s in $spellings; do spoofs+=(-H "$s: evil-$s"); done
done
[ "${#spoofs[@]}" = 98 ] || fail "too few spoofed spellings: ${#spoofs[@]}"
echoed=$(curl -s -b "$JAR" -H 'Accept: application/json' "${spoofs[@]}" http://127.0.0.1:24443/echo)
python3 - "$echoed" <<'PY' || fail "underscore spellings: $echoed"
import json, sys
h = json.loads(sys.argv[1])["headers"]
assert not [n for n in h if "_" in n], h
assert "evil" not in json.dumps(h), h
assert h["x-dingtalk-userid"] == ["wangwu"], h
assert h["x-forwarded-user"] == ["Pm4GxT8cVb2NzQ6wLr0HkJsiEiE"], h
# nginx drops every header name with an underscore (underscores_in_headers off, its default).
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
echo "deploy/nginx.conf works: all 12 checks passed"
