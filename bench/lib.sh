# shellcheck shell=bash
# bench/lib.sh — shared pieces of bench/compare.sh and bench/idle-conns.sh (sourced, not run).
#
# The caller sets WORK (a mktemp dir), BIN (the dinggate binary) and BODY (upstream body), then
# uses: need_tools, check_ports, start_bg/stop_all (every process started here is stopped by PID),
# write_upstream_conf / write_proxy_conf (nginx configs, all paths inside $WORK, non-root),
# write_gateway_conf, wait_port, login (prints the session cookie as name=value).
# Only loopback ports 19000-19199 are used.

PY=${PY:-python3}
# Debian puts nginx in /usr/sbin, which a non-root user's PATH often lacks
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH=$PATH:/usr/sbin:/sbin ;; esac
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The original stdout/stderr, kept as fds 7 and 8: an interrupt trap can run inside a function
# call whose output is redirected (e.g. into a raw wrk file); restore_output puts them back.
exec 7>&1 8>&2
restore_output() { exec 1>&7 2>&8; }

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
rep() { "$PY" "$HERE/report.py" "$@"; }

# The dinggate binary to measure, as an absolute path: $BENCH_BIN, or the release build (built).
release_bin() {
  local bin
  if [[ -n ${BENCH_BIN:-} ]]; then
    bin=$BENCH_BIN
  else
    log "building the release binary (cargo build --release)"
    cargo build --release --quiet >&2
    bin=target/release/dinggate
  fi
  [[ -x $bin ]] || die "no executable dinggate at $bin"
  readlink -f "$bin"
}

need_tools() {
  local t missing=()
  for t in "$@"; do command -v "$t" >/dev/null || missing+=("$t"); done
  if ((${#missing[@]})); then
    echo "missing: ${missing[*]} — needs wrk and nginx: apt-get install wrk nginx-light" >&2
    exit 2
  fi
}

check_ports() {  # refuse to start if any port is taken
  local p
  for p in "$@"; do
    ((p >= 19000 && p <= 19199)) || die "port $p outside 19000-19199"
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "port 127.0.0.1:$p is already in use; stop what holds it (a previous run still up?)" >&2
      exit 2
    fi
  done
}

declare -a BG_PIDS=() BG_NAMES=()
start_bg() {  # start_bg NAME CPUS CMD...   (CMD runs the server in the foreground)
  local name=$1 cpus=$2; shift 2
  if [[ -n $cpus ]]; then
    taskset -c "$cpus" "$@" >"$WORK/$name.log" 2>&1 &
  else
    "$@" >"$WORK/$name.log" 2>&1 &
  fi
  BG_PIDS+=("$!"); BG_NAMES+=("$name")
  log "started $name (pid $!${cpus:+, cpus $cpus})"
}
pid_of() {  # pid_of NAME
  local i
  for i in "${!BG_NAMES[@]}"; do [[ ${BG_NAMES[$i]} == "$1" ]] && { echo "${BG_PIDS[$i]}"; return; }; done
  return 1
}
stop_all() {  # TERM every started process (newest first), KILL after 5 s
  local i pid
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${BG_PIDS[$i]}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "${BG_NAMES[$i]} (pid $pid) ignored TERM: KILL"; kill -KILL "$pid" 2>/dev/null || true; }
    wait "$pid" 2>/dev/null || true
  done
  BG_PIDS=(); BG_NAMES=()
}

wait_port() {  # wait_port PORT PID: wait until PORT accepts, fail if PID dies or after 15 s
  local i
  for ((i = 0; i < 150; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

nofile_for() {  # fd limit for an nginx worker with $1 worker_connections (capped by ulimit -Hn)
  local want=$(($1 * 2 + 64)) hard
  hard=$(ulimit -Hn)
  if [[ $hard != unlimited ]] && ((want > hard)); then want=$hard; fi
  echo "$want"
}

nginx_common() {  # nginx_common NAME: http{} settings shared by every nginx instance
  mkdir -p "$WORK/nginx-$1"
  cat <<EOF
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    tcp_nodelay on;
    server_tokens off;
    client_body_temp_path $WORK/nginx-$1/body;
    proxy_temp_path       $WORK/nginx-$1/proxy;
    fastcgi_temp_path     $WORK/nginx-$1/fastcgi;
    uwsgi_temp_path       $WORK/nginx-$1/uwsgi;
    scgi_temp_path        $WORK/nginx-$1/scgi;
EOF
}

# write_upstream_conf FILE PORT STATUS_PORT WORKER_CONNECTIONS
# 1 worker: GET anything -> 200, fixed $BODY as text/plain; stub_status on STATUS_PORT.
write_upstream_conf() {
  cat >"$1" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $WORK/nginx-upstream.pid;
error_log $WORK/nginx-upstream.error.log warn;
worker_rlimit_nofile $(nofile_for "$4");
events { worker_connections $4; }
http {
$(nginx_common upstream)
    default_type text/plain;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / { return 200 "$BODY"; }
    }
    server {
        listen 127.0.0.1:$3;
        location / { stub_status; }
    }
}
EOF
}

# write_proxy_conf FILE PORT UPSTREAM_PORT WORKER_CONNECTIONS: plain reverse proxy, 1 worker.
write_proxy_conf() {
  cat >"$1" <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $WORK/nginx-proxy.pid;
error_log $WORK/nginx-proxy.error.log warn;
worker_rlimit_nofile $(nofile_for "$4");
events { worker_connections $4; }
http {
$(nginx_common proxy)
    upstream up {
        server 127.0.0.1:$3;
        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
}

start_nginx() {  # start_nginx NAME CPUS CONF
  nginx -t -q -p "$WORK" -e "$WORK/$1.error.log" -c "$3" 2>"$WORK/$1.test.log" \
    || { cat "$WORK/$1.test.log" >&2; die "nginx config $3 refused"; }
  start_bg "$1" "$2" nginx -p "$WORK" -e "$WORK/$1.error.log" -c "$3"
}

MOCK_ID=dingbenchclient
MOCK_SECRET=bench-client-secret-0123456789abcdef
start_mock() {  # start_mock PORT CPUS
  start_bg mock "$2" "$BIN" mock-dingtalk --listen "127.0.0.1:$1" \
    --client-id "$MOCK_ID" --client-secret "$MOCK_SECRET"
}

# write_gateway_conf FILE PORT UPSTREAM_PORT MOCK_PORT [extra YAML lines]
write_gateway_conf() {
  cat >"$1" <<EOF
listen: "127.0.0.1:$2"
public_url: "http://127.0.0.1:$2"
upstream: "http://127.0.0.1:$3"
dingtalk:
  client_id: "$MOCK_ID"
  client_secret: "$MOCK_SECRET"
  corp_id: "dingcorp00000001"
  login_url: "http://127.0.0.1:$4"
  api_url: "http://127.0.0.1:$4"
  oapi_url: "http://127.0.0.1:$4"
session:
  signing_key: "bench-signing-key-0123456789abcdef0123456789"
log:
  level: "warn"
${5:-}
EOF
  "$BIN" check --config "$1" >"$WORK/gateway-check.log" 2>&1 \
    || { cat "$WORK/gateway-check.log" >&2; die "dinggate check refused $1"; }
}

login() {  # login GATEWAY_PORT: one login through the mock as a browser does it; prints name=value
  local j auth cb v
  j="$WORK/login.jar"; rm -f "$j"
  auth=$(curl -s -c "$j" -b "$j" -o /dev/null -w '%{redirect_url}' "http://127.0.0.1:$1/_dinggate/start?rd=/")
  [[ -n $auth ]] || return 1
  cb=$(curl -s -o /dev/null -w '%{redirect_url}' "${auth}&mock_user=zhangsan")
  [[ -n $cb ]] || return 1
  curl -s -c "$j" -b "$j" -o /dev/null "$cb"
  v=$(awk '$6 ~ /dinggate$/ && $6 !~ /_csrf_/ {print $6 "=" $7}' "$j" | tail -n1)
  [[ -n $v ]] && echo "$v"
}
