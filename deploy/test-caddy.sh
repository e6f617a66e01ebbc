#!/usr/bin/env bash
# Checks deploy/Caddyfile for real: Caddy (forward_auth) in front of the demo upstream, dinggate
# as forward-auth, the mock DingTalk for the login. Needs caddy (apt-get install caddy), curl
# and python3.
# Usage: bash deploy/test-caddy.sh   (builds the release binary; exits non-zero on any failure)
# DEPLOY_TEST_BIN=path/to/dinggate skips the release build (e.g. target/debug/dinggate).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v caddy >/dev/null || { echo "caddy is not installed (apt-get install caddy)"; exit 1; }
if [ -z "${DEPLOY_TEST_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${DEPLOY_TEST_BIN:-$PWD/target/release/dinggate}
W=$(mktemp -d)
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- gateway log"; cat "$W/gw.log"; echo "--- caddy log"; cat "$W/caddy.log" 2>/dev/null; exit 1; }

# The shipped example, moved to loopback ports and plain http; no admin API, no ACME.
{
  printf '{\n\tadmin off\n\tauto_https off\n}\n'
  sed -e 's#^app\.example\.com {#http://127.0.0.1:25443 {#' -e 's#127\.0\.0\.1:4180#127.0.0.1:25180#g' \
      -e 's#reverse_proxy 127\.0\.0\.1:8080#reverse_proxy 127.0.0.1:25182#' deploy/Caddyfile
} > "$W/Caddyfile"
grep -q 'http://127.0.0.1:25443 {' "$W/Caddyfile" || fail "the Caddyfile's site address was not rewritten"
cat > "$W/gateway.yaml" <<YAML
listen: "127.0.0.1:25180"
public_url: "http://127.0.0.1:25443"
upstream: "http://127.0.0.1:25182"
trusted_proxies: [127.0.0.1]
dingtalk:
  client_id: "dingmockclientid0001"
  client_secret: "mock-client-secret-0123456789abcdef"
  corp_id: "dingcorp00000001"
  login_url: "http://127.0.0.1:25181"
  api_url: "http://127.0.0.1:25181"
  oapi_url: "http://127.0.0.1:25181"
session:
  signing_key: "caddy-test-signing-key-0123456789abcdef"
routes:
  - path_prefix: /
  - path_prefix: /admin
    allow: { admins: true }
YAML
"$BIN" mock-dingtalk --listen 127.0.0.1:25181 >"$W/mock.log" 2>&1 &
"$BIN" demo-upstream --listen 127.0.0.1:25182 >"$W/up.log" 2>&1 &
"$BIN" run --config "$W/gateway.yaml" >"$W/gw.log" 2>&1 &
for _ in $(seq 50); do curl -fs http://127.0.0.1:25180/_dinggate/healthz >/dev/null && break; sleep 0.1; done
XDG_DATA_HOME="$W" XDG_CONFIG_HOME="$W" HOME="$W" caddy run --config "$W/Caddyfile" --adapter caddyfile >"$W/caddy.log" 2>&1 &
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:25443/_dinggate/healthz && break; sleep 0.1; done
curl -fs -o /dev/null http://127.0.0.1:25443/_dinggate/healthz || fail "caddy did not come up"

B=http://127.0.0.1:25443
JAR="$W/jar"
HTML='Accept: text/html'
# Caddy sends X-Forwarded-Method/-Uri and the browser's Accept: dinggate redirects to the login.
loc=$(curl -s -H "$HTML" -o /dev/null -w '%{http_code} %{redirect_url}' "$B/page?a=1&b=2")
[ "$loc" = "302 $B/_dinggate/start?rd=%2Fpage%3Fa%3D1%26b%3D2" ] || fail "unauthenticated: got '$loc'"
# A non-GET original is an API call: 401 with the login URL, never a redirect.
code=$(curl -s -H "$HTML" -X POST -o /dev/null -w '%{http_code}' "$B/page")
[ "$code" = 401 ] || fail "unauthenticated POST: got $code (want 401)"
auth=$(curl -s -H "$HTML" -c "$JAR" -b "$JAR" -o /dev/null -w '%{redirect_url}' "${loc#302 }")
cb=$(curl -s -o /dev/null -w '%{redirect_url}' "${auth}&mock_user=wangwu")
back=$(curl -s -H "$HTML" -c "$JAR" -b "$JAR" -o /dev/null -w '%{http_code} %{redirect_url}' "$cb")
[ "$back" = "302 $B/page?a=1&b=2" ] || fail "callback: got '$back'"

echoed=$(curl -s -b "$JAR" -H 'Accept: application/json' -H 'X-DingTalk-UserId: boss' -H 'X-Forwarded-User: evil' \
  -H 'X-Forwarded-Email: evil@example.com' "$B/echo")
python3 - "$echoed" <<'PY' || fail "identity headers: $echoed"
import json, sys
h = json.loads(sys.argv[1])["headers"]
assert h["x-dingtalk-userid"] == ["wangwu"], h
assert h["x-forwarded-user"] == ["Pm4GxT8cVb2NzQ6wLr0HkJsiEiE"], h
assert h.get("x-forwarded-email", [""]) == [""], h   # 王五 has no e-mail: the spoofed one is gone too
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
echoed=$(curl -s -b "$JAR" -H 'Accept: application/json' "${spoofs[@]}" -H 'X-DingTalk-Extra: evil' -H 'X-Forwarded-Groups: evil' "$B/echo")
python3 - "$echoed" <<'PY' || fail "underscore spellings: $echoed"
import json, sys
h = json.loads(sys.argv[1])["headers"]
assert not [n for n in h if "_" in n], h
assert "evil" not in json.dumps(h), h
assert h["x-dingtalk-userid"] == ["wangwu"], h
assert h["x-forwarded-user"] == ["Pm4GxT8cVb2NzQ6wLr0HkJsiEiE"], h
assert "x-dingtalk-extra" not in h and "x-forwarded-groups" not in h, h  # the whole families
PY
code=$(curl -s -b "$JAR" -o /dev/null -w '%{http_code}' "$B/admin/x")
[ "$code" = 403 ] || fail "policy: /admin as wangwu got $code"
# Client-sent copies of the headers dinggate reads must not change what is checked: they are
# overwritten by the proxy, or disagree with its own and the check fails closed (never 200).
for spoof in 'X-Forwarded-Uri: /' 'X-Original-URI: /' 'X-Forwarded-Host: other.example' 'X-Forwarded-Method: OPTIONS'; do
  code=$(curl -s -b "$JAR" -H "$spoof" -o /dev/null -w '%{http_code}' http://127.0.0.1:25443/admin/x)
  case "$code" in 403|400) ;; *) fail "spoofed '$spoof' on /admin/x as wangwu got $code" ;; esac
done

# Non-ASCII bytes, raw on the wire (HTTP clients percent-encode such URLs, so the request is
# written by hand): whatever Caddy passes in X-Forwarded-Uri, dinggate must decide on the path
# the app sees (/admin/%C3%A9), never on a default.
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
  code=$(raw_status 25443 "$target")
  [ "$code" = 403 ] || fail "non-ASCII: $target as wangwu got $code (want 403)"
done
code=$(raw_status 25443 "b'/docs/\\xc3\\xa9'")
[ "$code" = 200 ] || fail "non-ASCII: /docs/é as wangwu got $code (want 200)"
echo "deploy/Caddyfile works: all 12 checks passed"
