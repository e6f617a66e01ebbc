#!/usr/bin/env bash
# bench/compare.sh — throughput, latency, CPU and memory of dinggate next to nginx, with wrk.
#
#   bash bench/compare.sh            (from the project root; prints a markdown report)
#
# Needs: wrk, nginx (with stub_status, e.g. nginx-light), curl, taskset, python3 (stdlib only).
# Runs as non-root. Uses loopback ports 19000-19099 only and refuses to start if one is taken.
#
# Starts (all on 127.0.0.1, every process stopped by PID on exit, error or ^C):
#   upstream  nginx, 1 worker, `return 200` with a fixed 100-byte text/plain body, keep-alive,
#             plus a stub_status server whose request counter proves what reached the upstream
#   nginx     nginx as a plain reverse proxy to the upstream (1 worker, keepalive 512 pool)
#   mock      dinggate mock-dingtalk (the login provider)
#   dinggate  dinggate run (upstream = the nginx upstream, log level warn); logged into once
#             through the mock with curl to get the session cookie
# Targets, in interleaved rounds (each round: each conn count, in it each target in turn):
#   direct         wrk -> upstream                           (baseline)
#   nginx          wrk -> nginx proxy -> upstream            (the reference proxy)
#   dinggate       wrk -> dinggate -> upstream, GET / with the session cookie
#   dinggate-302   GET / without cookie, Accept: text/html -> 302 to the login (no upstream hit)
#   dinggate-auth  forward-auth: GET /_dinggate/auth + cookie + X-Original-URI: / -> 200
#
# Knobs (environment):
#   DURATION=10 (s per run)  REPS=3 (rounds)  CONNS="16 256"  THREADS=2 (wrk threads)
#   WARMUP=2 (s, one warm-up per target before the rounds)
#   BENCH_BIN=path           dinggate binary; unset: `cargo build --release` and target/release/dinggate
#   WRK_CPUS / SERVER_CPUS   taskset CPU lists; default with >= 2 CPUs: wrk (and this script) on
#                            CPU 0, every server on the other CPUs; with 1 CPU no pinning
#   RESULTS_DIR=<work dir>/results   where runs.csv, meta.env, raw wrk output and report.md go
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
# shellcheck source=bench/lib.sh
source bench/lib.sh

need_tools wrk nginx curl taskset "$PY"
DURATION=${DURATION:-10} REPS=${REPS:-3} CONNS=${CONNS:-"16 256"} THREADS=${THREADS:-2} WARMUP=${WARMUP:-2}
[[ $DURATION =~ ^[0-9]+$ && $REPS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ && $WARMUP =~ ^[0-9]+$ ]] \
  || die "DURATION, REPS, THREADS, WARMUP are whole numbers"
for c in $CONNS; do [[ $c =~ ^[0-9]+$ ]] || die "CONNS is a list of numbers"; done

PORT_UP=19001 PORT_STATUS=19009 PORT_NGINX=19002 PORT_GW=19080 PORT_MOCK=19081
check_ports $PORT_UP $PORT_STATUS $PORT_NGINX $PORT_GW $PORT_MOCK

BIN=$(release_bin)

NCPU=$(nproc)
if [[ -z ${WRK_CPUS+x} && -z ${SERVER_CPUS+x} ]]; then
  if ((NCPU == 2)); then WRK_CPUS=0 SERVER_CPUS=1; elif ((NCPU > 2)); then WRK_CPUS=0 SERVER_CPUS=1-$((NCPU - 1)); else WRK_CPUS="" SERVER_CPUS=""; fi
fi
WRK_CPUS=${WRK_CPUS:-} SERVER_CPUS=${SERVER_CPUS:-}
if [[ -z $WRK_CPUS && -z $SERVER_CPUS ]]; then
  PINNING="none (1 CPU: wrk and the servers share it, figures are a floor)"
  log "only $NCPU CPU: no pinning"
else
  PINNING="wrk and the harness on CPU ${WRK_CPUS:-any}, servers on CPU ${SERVER_CPUS:-any}"
  # curl, python and the samplers of this script stay on the load generator's CPUs
  [[ -n $WRK_CPUS ]] && taskset -p -c "$WRK_CPUS" $$ >/dev/null
fi
pin() { local cpus=$1; shift; if [[ -n $cpus ]]; then taskset -c "$cpus" "$@"; else "$@"; fi; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dinggate-bench.XXXXXX")
RESULTS_DIR=${RESULTS_DIR:-$WORK/results}
mkdir -p "$RESULTS_DIR/raw"
CSV=$RESULTS_DIR/runs.csv META=$RESULTS_DIR/meta.env
finish() {
  local rc=$?
  trap - EXIT INT TERM
  restore_output
  stop_all
  log "work dir (configs, server logs): $WORK"
  log "raw results: $RESULTS_DIR"
  exit "$rc"
}
trap finish EXIT
trap 'restore_output; log "interrupted: stopping everything"; exit 130' INT TERM

# exactly 100 bytes
BODY='dinggate bench upstream: a fixed 100-byte text/plain body for every request of the benchmark........'
((${#BODY} == 100)) || die "body is ${#BODY} bytes"

# ----------------------------------------------------------------------------- start the servers
write_upstream_conf "$WORK/upstream.conf" $PORT_UP $PORT_STATUS 4096
write_proxy_conf "$WORK/proxy.conf" $PORT_NGINX $PORT_UP 4096
write_gateway_conf "$WORK/gw.yaml" $PORT_GW $PORT_UP $PORT_MOCK
start_nginx upstream "$SERVER_CPUS" "$WORK/upstream.conf"
wait_port $PORT_UP "$(pid_of upstream)" || die "upstream did not start ($WORK/upstream.log)"
start_nginx nginx "$SERVER_CPUS" "$WORK/proxy.conf"
wait_port $PORT_NGINX "$(pid_of nginx)" || die "nginx proxy did not start ($WORK/nginx.log)"
start_mock $PORT_MOCK "$SERVER_CPUS"
wait_port $PORT_MOCK "$(pid_of mock)" || die "mock did not start ($WORK/mock.log)"
start_bg dinggate "$SERVER_CPUS" "$BIN" run --config "$WORK/gw.yaml"
wait_port $PORT_GW "$(pid_of dinggate)" || die "dinggate did not start ($WORK/dinggate.log)"

COOKIE=$(login $PORT_GW) || die "login through the mock failed ($WORK/dinggate.log, $WORK/mock.log)"
log "logged in: cookie ${COOKIE%%=*} (${#COOKIE} bytes)"

# ----------------------------------------------------------------------------- targets
TARGETS=(direct nginx dinggate dinggate-302 dinggate-auth)
declare -A URL=(
  [direct]=http://127.0.0.1:$PORT_UP/
  [nginx]=http://127.0.0.1:$PORT_NGINX/
  [dinggate]=http://127.0.0.1:$PORT_GW/
  [dinggate-302]=http://127.0.0.1:$PORT_GW/
  [dinggate-auth]=http://127.0.0.1:$PORT_GW/_dinggate/auth
)
declare -A SERVER=([direct]=upstream [nginx]=nginx [dinggate]=dinggate [dinggate-302]=dinggate [dinggate-auth]=dinggate)
headers() {  # headers TARGET: the -H arguments (one per line) of that target
  case $1 in
    dinggate) printf '%s\n' "Cookie: $COOKIE" ;;
    dinggate-302) printf '%s\n' "Accept: text/html" ;;
    dinggate-auth) printf '%s\n' "Cookie: $COOKIE" "X-Original-URI: /" ;;
  esac
}
hargs() {  # hargs TARGET: fills the array HARGS with -H options
  HARGS=()
  local h
  while IFS= read -r h; do [[ -n $h ]] && HARGS+=(-H "$h"); done < <(headers "$1")
  return 0
}

# ----------------------------------------------------------------------------- functional checks
declare -A WANT=([direct]=200 [nginx]=200 [dinggate]=200 [dinggate-302]=302 [dinggate-auth]=200)
fail=0
for t in "${TARGETS[@]}"; do
  hargs "$t"
  out=$(curl -s --max-time 5 -o "$WORK/check-$t.body" -D "$WORK/check-$t.head" -w '%{http_code} %{redirect_url}' \
    "${HARGS[@]}" "${URL[$t]}") || true
  code=${out%% *} loc=${out#* }
  body=$(cat "$WORK/check-$t.body")
  note=""
  case $t in
    direct | nginx | dinggate) [[ $body == "$BODY" ]] || { note="body is not the upstream's 100-byte body"; }  ;;
    dinggate-302) [[ $loc == "http://127.0.0.1:$PORT_MOCK/"* || $loc == *"/_dinggate/start"* ]] \
      || note="Location '$loc' does not go to the login" ;;
  esac
  if [[ $code != "${WANT[$t]}" || -n $note ]]; then
    log "CHECK FAILED $t: status $code (want ${WANT[$t]}) ${note}"; fail=1
  else
    log "check $t: $code${loc:+ → ${loc:0:80}}"
  fi
done
((fail == 0)) || die "functional checks failed; headers/bodies in $WORK/check-*"

# ----------------------------------------------------------------------------- metadata, idle RSS
RSS_IDLE_DINGGATE=$(rep rss "$(pid_of dinggate)")
RSS_IDLE_NGINX=$(rep rss "$(pid_of nginx)")
{
  echo "DATE=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "NPROC=$NCPU"
  echo "KERNEL=$(uname -r)"
  echo "PINNING=$PINNING"
  echo "WRK=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "NGINX=$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  echo "BIN=$BIN ($("$BIN" --version 2>/dev/null | head -1))"
  echo "DURATION=$DURATION"; echo "THREADS=$THREADS"; echo "REPS=$REPS"; echo "CONNS=$CONNS"
  echo "COMMAND=DURATION=$DURATION REPS=$REPS CONNS=\"$CONNS\" THREADS=$THREADS WARMUP=$WARMUP${BENCH_BIN:+ BENCH_BIN=$BENCH_BIN} WRK_CPUS=$WRK_CPUS SERVER_CPUS=$SERVER_CPUS bash bench/compare.sh"
  echo "LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "RSS_IDLE_DINGGATE_KB=$RSS_IDLE_DINGGATE"
  echo "RSS_IDLE_NGINX_KB=$RSS_IDLE_NGINX"
} >"$META"

# ----------------------------------------------------------------------------- load runs
run_one() {  # run_one ROUND CONNS TARGET SECONDS (ROUND 0 = warm-up, not recorded)
  local round=$1 c=$2 t=$3 dur=$4 pid out up0 up1 cpu0 cpu1 sampler
  pid=$(pid_of "${SERVER[$t]}")
  out="$RESULTS_DIR/raw/r$round-c$c-$t.txt"
  hargs "$t"
  up0=$(rep status "http://127.0.0.1:$PORT_STATUS/")
  read -r cpu0 _ < <(rep proc "$pid")
  (sleep "$(awk "BEGIN{print $dur/2}")"; rep rss "$pid" >"$WORK/rss-mid") &
  sampler=$!
  pin "$WRK_CPUS" timeout $((dur + 30)) wrk -t"$THREADS" -c"$c" -d"${dur}s" --timeout 5s --latency \
    -s "$ROOT/bench/wrk-report.lua" "${HARGS[@]}" "${URL[$t]}" >"$out" 2>&1 \
    || log "wrk exited non-zero for $t c=$c (see $out)"
  wait "$sampler" || true
  read -r cpu1 _ < <(rep proc "$pid")
  up1=$(rep status "http://127.0.0.1:$PORT_STATUS/")
  if ((round == 0)); then
    grep -q '^WRKRESULT' "$out" || log "WARNING: warm-up of $t produced no result ($out)"
    return 0
  fi
  rep row "$CSV" round="$round" conns="$c" target="$t" wrk="$out" up0="$up0" up1="$up1" \
    cpu0="$cpu0" cpu1="$cpu1" rss_mid="$(cat "$WORK/rss-mid" 2>/dev/null || true)" >&2
  rm -f "$WORK/rss-mid"
}

nconns=$(wc -w <<<"$CONNS")
log "$REPS round(s) × $nconns conn count(s) × ${#TARGETS[@]} targets × ${DURATION}s ≈ $((REPS * nconns * ${#TARGETS[@]} * (DURATION + 1) / 60 + 1)) min; pinning: $PINNING"
if ((WARMUP > 0)); then
  for t in "${TARGETS[@]}"; do run_one 0 16 "$t" "$WARMUP"; done
fi
for round in $(seq 1 "$REPS"); do
  for c in $CONNS; do
    for t in "${TARGETS[@]}"; do run_one "$round" "$c" "$t" "$DURATION"; done
  done
done

# the session is still valid after the load (not expired mid-run)
code=$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE" "${URL[dinggate]}" || true)
[[ $code == 200 ]] || log "WARNING: after the runs the authenticated GET / answered $code"
{
  echo "LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "RSS_AFTER_DINGGATE_KB=$(rep rss "$(pid_of dinggate)")"
  echo "RSS_AFTER_NGINX_KB=$(rep rss "$(pid_of nginx)")"
} >>"$META"

[[ -s $CSV ]] || die "no results"
rep report "$CSV" "$META" | tee "$RESULTS_DIR/report.md"
echo
echo "Raw results (runs.csv, meta.env, raw/ wrk output, report.md): $RESULTS_DIR"
