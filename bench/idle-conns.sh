#!/usr/bin/env bash
# bench/idle-conns.sh — memory held by N idle keep-alive client connections, dinggate and nginx.
#
#   bash bench/idle-conns.sh          (from the project root; prints a markdown table)
#
# Needs: nginx (with stub_status, e.g. nginx-light), curl, python3 (stdlib only). Non-root is fine.
# Uses loopback ports 19100-19199 only (refuses to start if one is taken), so it can run next to
# bench/compare.sh. Every process it starts is stopped by PID on exit, error or ^C.
#
# Starts an nginx upstream (fixed 100-byte body), nginx as a plain reverse proxy to it, the mock
# DingTalk and dinggate (default config; server.max_connections raised only if N needs it), logs
# into dinggate once through the mock. Then, for dinggate and then for nginx, bench/idle_client.py:
#   1. samples the server's VmRSS idle (after login, before the connections);
#   2. opens N keep-alive connections in batches, each sends ONE `GET /` (dinggate: with the
#      session cookie) and reads the full 200 response; then all stay open and idle;
#   3. after HOLD seconds samples VmRSS, counts the connections still open (and any the server
#      closed: dinggate's server.header_read_timeout, 10 s by default, also bounds an idle HTTP/1
#      keep-alive connection, so keep open time + HOLD under 10 s or expect closes);
#   4. closes every connection, waits SETTLE seconds, samples VmRSS again (memory given back?).
# VmRSS is summed over the process tree (nginx: master + worker).
#
# Knobs (environment):
#   N=10000 (connections)  HOLD=5 (s idle before sampling)  SETTLE=2 (s after closing)
#   BATCH=200 (connections opened at once)
#   BENCH_BIN=path   dinggate binary; unset: `cargo build --release` and target/release/dinggate
# The open-file limit is raised (ulimit -n) to what N needs; the script says so if it cannot.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

need_tools nginx curl "$PY"
N=${N:-10000} HOLD=${HOLD:-5} SETTLE=${SETTLE:-2} BATCH=${BATCH:-200}
[[ $N =~ ^[0-9]+$ && $BATCH =~ ^[0-9]+$ ]] || die "N and BATCH are whole numbers"
[[ $HOLD =~ ^[0-9.]+$ && $SETTLE =~ ^[0-9.]+$ ]] || die "HOLD and SETTLE are seconds"
export SETTLE BATCH

PORT_UP=19101 PORT_STATUS=19109 PORT_NGINX=19102 PORT_GW=19180 PORT_MOCK=19181
check_ports $PORT_UP $PORT_STATUS $PORT_NGINX $PORT_GW $PORT_MOCK

BIN=$(release_bin)

# file descriptors: the client holds N, each server N + its upstream connections
want=$((N + 2048))
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < want)); then
  ulimit -n "$want" 2>/dev/null || ulimit -Hn "$want" 2>/dev/null || true
  hard=$(ulimit -Hn)
fi
have=$(ulimit -n)
if [[ $have != unlimited ]] && ((have < want)); then
  ulimit -n "$want" 2>/dev/null || ulimit -n "$hard" 2>/dev/null || true
  have=$(ulimit -n)
fi
if [[ $have != unlimited ]] && ((have < N + 256)); then
  echo "cannot raise the open-file limit to $want (ulimit -n is $have, hard limit $hard):" \
    "lower N or raise the hard limit (e.g. ulimit -Hn $want as root, LimitNOFILE=)" >&2
  exit 2
fi
log "open-file limit (ulimit -n) for this run: $have"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dinggate-idle.XXXXXX")
finish() {
  local rc=$?
  trap - EXIT INT TERM
  restore_output
  stop_all
  log "work dir (configs, logs, results): $WORK"
  exit "$rc"
}
trap finish EXIT
trap 'restore_output; log "interrupted: stopping everything"; exit 130' INT TERM

BODY='dinggate bench upstream: a fixed 100-byte text/plain body for every request of the benchmark........'
WC=$((N + 1024))  # nginx worker_connections: N clients + upstream connections
write_upstream_conf "$WORK/upstream.conf" $PORT_UP $PORT_STATUS 4096
write_proxy_conf "$WORK/proxy.conf" $PORT_NGINX $PORT_UP "$WC"
EXTRA=""
if ((N + 1024 > 16384)); then EXTRA=$'server:\n  max_connections: '"$((N + 1024))"; fi
write_gateway_conf "$WORK/gw.yaml" $PORT_GW $PORT_UP $PORT_MOCK "$EXTRA"
start_nginx upstream "" "$WORK/upstream.conf"
wait_port $PORT_UP "$(pid_of upstream)" || die "upstream did not start ($WORK/upstream.log)"
start_nginx nginx "" "$WORK/proxy.conf"
wait_port $PORT_NGINX "$(pid_of nginx)" || die "nginx proxy did not start ($WORK/nginx.log)"
start_mock $PORT_MOCK ""
wait_port $PORT_MOCK "$(pid_of mock)" || die "mock did not start ($WORK/mock.log)"
start_bg dinggate "" "$BIN" run --config "$WORK/gw.yaml"
wait_port $PORT_GW "$(pid_of dinggate)" || die "dinggate did not start ($WORK/dinggate.log)"
COOKIE=$(login $PORT_GW) || die "login through the mock failed ($WORK/dinggate.log, $WORK/mock.log)"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "http://127.0.0.1:$PORT_GW/")
[[ $code == 200 ]] || die "authenticated GET / answered $code"
log "logged in (${COOKIE%%=*}); dinggate header_read_timeout/idle_timeout: $(
  "$BIN" check --config "$WORK/gw.yaml" 2>/dev/null | grep -E 'header_read_timeout|idle_timeout' | tr -s ' ' | sed 's/^ //' | paste -sd, - || echo '?')"

run_client() {  # run_client NAME PORT PID [COOKIE]
  local out
  log "$1: $N connections, hold ${HOLD}s"
  out=$("$PY" bench/idle_client.py "$2" "$3" "$N" "$HOLD" "${4:-}") || true
  echo "$out" >"$WORK/$1.json"
  grep -q '"error"' <<<"$out" && log "WARNING: $1: $out"
  log "$1: $out"
}
run_client dinggate $PORT_GW "$(pid_of dinggate)" "$COOKIE"
sleep 1
run_client nginx $PORT_NGINX "$(pid_of nginx)"

"$PY" - "$WORK" "$N" "$HOLD" "$SETTLE" "$BIN" <<'PY'
import json, sys
work, n, hold, settle, bin_ = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
mb = lambda kb: "%.1f MB" % (kb / 1024)
print("## %d idle keep-alive connections (one `GET /` each, then held %s s)" % (n, hold))
print()
print("| server | RSS idle | RSS holding | per connection | still open | closed by server | RSS after close |")
print("|---|---:|---:|---:|---:|---:|---:|")
warn = []
for name, label in (("dinggate", "dinggate"), ("nginx", "nginx proxy (master + worker)")):
    try:
        d = json.load(open("%s/%s.json" % (work, name)))
    except (OSError, ValueError):
        d = {"error": "no result"}
    if "error" in d:
        print("| %s | failed: %s | | | | | |" % (label, d["error"]))
        continue
    print("| %s | %s | %s | %.1f KB | %d / %d | %d | %s |" % (
        label, mb(d["rss_idle_kb"]), mb(d["rss_held_kb"]), d["rss_per_conn_kb"], d["held_open"], n,
        d["closed_by_server"], mb(d["rss_closed_kb"])))
    if d["closed_by_server"]:
        warn.append("**WARNING** %s closed %d of the idle connections during the hold, so RSS holding "
                    "was read after those closes (dinggate: server.header_read_timeout, default 10 s, "
                    "also ends idle HTTP/1 keep-alive connections; lower HOLD or N)"
                    % (label, d["closed_by_server"]))
    warn.append("%s: opening took %.1f s; the oldest connection was idle up to %.1f s when RSS was read"
                % (label, d["open_s"], d["first_open_age_s"]))
print()
print("dinggate binary: %s" % bin_)
print("per connection = (RSS holding − RSS idle) ÷ N; RSS after close: read %s s after the client closed them all." % settle)
for w in warn:
    print("- " + w)
PY
