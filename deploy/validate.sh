#!/usr/bin/env bash
# Checks everything in deploy/ that can be checked without a cluster or a
# container engine, and fails loudly on the first problem:
#   1. every Kubernetes manifest against the API schemas bundled with the
#      kubernetes-validate Python package (offline; strict: unknown fields
#      are errors), for the oldest Kubernetes these manifests need (1.30:
#      the preStop sleep action) and the newest the package knows; a
#      warning (an unknown kind, say) counts as a failure;
#   2. what the schemas cannot see: the shutdown timing adds up, the probes
#      and scrape annotations point at the admin port, the backend is the
#      headless Service, and the ConfigMap's TOML parses;
#   3. the systemd unit with `systemd-analyze verify`, and the Dockerfile
#      with hadolint, when those tools are installed (required when
#      TIDEGATE_REQUIRE_EXTERNAL=1, as in .ci/run).
# With TIDEGATE_BIN=path/to/tidegate it also runs `tidegate check-config`
# on the ConfigMap's TOML.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "deploy/validate.sh: FAILED: $*" >&2
    exit 1
}

# An optional tool: missing is a skip, or a failure when CI requires it.
have() {
    if command -v "$1" >/dev/null 2>&1; then return 0; fi
    if [ "${TIDEGATE_REQUIRE_EXTERNAL:-}" = 1 ]; then
        fail "$1 is not installed (TIDEGATE_REQUIRE_EXTERNAL=1)"
    fi
    echo "deploy/validate.sh: $1 not installed: skipped"
    return 1
}

# pip's commands live in Python's scripts directory (not always on PATH).
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
command -v kubernetes-validate >/dev/null 2>&1 ||
    fail "kubernetes-validate is not installed (pip install kubernetes-validate)"

manifests=(kubernetes/*.yaml)
[ -e "${manifests[0]}" ] || fail "no manifests in deploy/kubernetes/"

# 1. Schemas. The oldest version first, then the package's newest.
for version in 1.30.0 newest; do
    args=(--strict --quiet)
    [ "$version" = newest ] || args+=(-k "$version")
    if ! out=$(kubernetes-validate "${args[@]}" "${manifests[@]}" 2>&1); then
        echo "$out" >&2
        fail "kubernetes-validate ($version) rejected a manifest"
    fi
    if [ -n "$out" ]; then
        echo "$out" >&2
        fail "kubernetes-validate ($version) warned"
    fi
done
echo "deploy/validate.sh: ${#manifests[@]} manifests valid (Kubernetes 1.30 and newest schemas)"

# 2. Cross-file consistency.
TOML_OUT="$tmp/tidegate.toml" python3 - "${manifests[@]}" <<'EOF'
import os
import re
import sys
import tomllib

import yaml

docs = {}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        for doc in yaml.safe_load_all(f):
            if doc:
                docs[(doc["kind"], doc["metadata"]["name"])] = doc

problems = []


def check(ok, what):
    if not ok:
        problems.append(what)


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", duration)
    if not m:
        raise SystemExit(f"cannot read the duration {duration!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


dep = docs.get(("Deployment", "tidegate"))
if dep is None:
    raise SystemExit("deploy/validate.sh: FAILED: no Deployment named tidegate")
pod = dep["spec"]["template"]
spec = pod["spec"]
(c,) = [c for c in spec["containers"] if c["name"] == "tidegate"]
args = c["args"]
check(args[:3] == ["proxy", "--config", "/etc/tidegate/tidegate.toml"],
      "the container must run `proxy --config /etc/tidegate/tidegate.toml`")
check(dep["spec"]["replicas"] == 2, "replicas must be 2")

drain = seconds(args[args.index("--drain-timeout") + 1]) if "--drain-timeout" in args else 10
pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
grace = spec["terminationGracePeriodSeconds"]
check(grace > pre_stop + drain,
      f"terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop}s + drain {drain}s")

ports = {p["name"]: p["containerPort"] for p in c["ports"]}
check(c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"},
      "readinessProbe must be GET /readyz on the admin port")
check(c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"},
      "livenessProbe must be GET /healthz on the admin port")
ann = pod["metadata"].get("annotations", {})
check(ann.get("prometheus.io/scrape") == "true", "prometheus.io/scrape must be \"true\"")
check(ann.get("prometheus.io/port") == str(ports.get("admin")),
      "prometheus.io/port must be the admin containerPort")
check(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path must be /metrics")

sc = c["securityContext"]
check(spec["securityContext"].get("runAsNonRoot") is True, "runAsNonRoot must be true")
check(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
check(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
check("requests" in c.get("resources", {}) and "limits" in c.get("resources", {}),
      "resources must have requests and limits")

(vol,) = [v for v in spec["volumes"] if "configMap" in v]
cm = docs.get(("ConfigMap", vol["configMap"]["name"]))
if cm is None:
    raise SystemExit("deploy/validate.sh: FAILED: the Deployment's ConfigMap is not defined")
toml_text = cm["data"]["tidegate.toml"]
try:
    conf = tomllib.loads(toml_text)
except tomllib.TOMLDecodeError as e:
    raise SystemExit(f"deploy/validate.sh: FAILED: the ConfigMap's TOML: {e}")
with open(os.environ["TOML_OUT"], "w", encoding="utf-8") as f:
    f.write(toml_text)

check(conf.get("listen", "").endswith(f":{ports['http']}"),
      "listen must use the http containerPort")
check(conf.get("admin", {}).get("address", "").endswith(f":{ports['admin']}"),
      "[admin] address must use the admin containerPort")
check(not conf.get("admin", {}).get("address", "127.").startswith("127."),
      "[admin] address must not be loopback, or the probes cannot reach it")
check("token" not in conf.get("admin", {}),
      "the admin token belongs in a Secret, not in the ConfigMap")
check("--admin-token" in args, "a non-loopback admin listener needs --admin-token")

for b in conf.get("backend", []):
    host = b["address"].rsplit(":", 1)[0]
    svc = docs.get(("Service", host.split(".")[0]))
    check(svc is not None and svc["spec"].get("clusterIP") == "None",
          f"backend {b['address']} must name a headless Service defined here")
check(bool(conf.get("backend")), "the ConfigMap must define at least one [[backend]]")

svc = docs.get(("Service", "tidegate"))
check(svc is not None and svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"],
      "Service tidegate must select the Deployment's pods")

if problems:
    for p in problems:
        print(f"deploy/validate.sh: {p}", file=sys.stderr)
    raise SystemExit("deploy/validate.sh: FAILED: the manifests disagree with each other")
print("deploy/validate.sh: shutdown timing, probes, annotations, backends consistent")
EOF

if [ -n "${TIDEGATE_BIN:-}" ]; then
    "$TIDEGATE_BIN" check-config "$tmp/tidegate.toml" ||
        fail "tidegate check-config rejected the ConfigMap's TOML"
fi

# 3. The systemd unit, with the binary's path pointed at one that exists
#    (verify checks that ExecStart's executable is there).
if have systemd-analyze; then
    sed "s#/usr/local/bin/tidegate#$(command -v true)#g" tidegate.service >"$tmp/tidegate.service"
    if ! out=$(systemd-analyze verify "$tmp/tidegate.service" 2>&1) || [ -n "$out" ]; then
        echo "$out" >&2
        fail "systemd-analyze verify complained about tidegate.service"
    fi
    echo "deploy/validate.sh: tidegate.service verified"
fi

if have hadolint; then
    hadolint Dockerfile || fail "hadolint: Dockerfile"
    echo "deploy/validate.sh: Dockerfile linted"
fi
echo "deploy/validate.sh: ok"
