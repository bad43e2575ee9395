#!/usr/bin/env python3
"""Validate deploy/k8s: every file parses as YAML, the kustomization lists every manifest,
workloads have readiness and liveness probes on the JCS ports, the agent StatefulSet has a
PVC, the ConfigMaps' TOML parses with a [tls] section whose files the jcs-tls Secret
provides, and the cluster and TLS secrets are mounted. Needs python3-yaml.
Usage: deploy/scripts/check-k8s.py [deploy/k8s]"""
import pathlib
import sys
import tomllib

import yaml

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/k8s")
errors = []


def check(cond, msg):
    if not cond:
        errors.append(msg)


docs = {}
for path in sorted(root.glob("*.yaml")):
    try:
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        errors.append(f"{path}: not valid YAML: {e}")

kust = docs.get("kustomization.yaml", [{}])[0]
listed = set(kust.get("resources", []))
for name in docs:
    if name != "kustomization.yaml":
        check(name in listed, f"{name} is not listed in kustomization.yaml")
for name in listed:
    check(name in docs, f"kustomization.yaml lists missing file {name}")

objects = {}
for name, ds in docs.items():
    if name == "kustomization.yaml":
        continue
    for d in ds:
        for key in ("apiVersion", "kind", "metadata"):
            check(key in d, f"{name}: an object has no {key}")
        objects[(d.get("kind"), d.get("metadata", {}).get("name"))] = d


def pod(kind, name):
    obj = objects.get((kind, name))
    check(obj is not None, f"missing {kind} {name}")
    return obj["spec"]["template"]["spec"] if obj else None


def probe_port(p):
    return (p.get("grpc") or p.get("httpGet") or p.get("tcpSocket") or {}).get("port")


for kind, name, port in [
    ("Deployment", "jcs-coordinator", 7900),
    ("StatefulSet", "jcs-agent", 7910),
    ("Deployment", "jcs-gateway", "http"),
]:
    spec = pod(kind, name)
    if spec is None:
        continue
    c = spec["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        check(probe in c, f"{name}: no {probe}")
        if probe in c:
            check(probe_port(c[probe]) == port, f"{name}: {probe} not on port {port}")
            # kubelet's gRPC probes cannot present a client certificate (mTLS).
            check("grpc" not in c[probe], f"{name}: {probe} is a gRPC probe on an mTLS port")
    tls_mounts = [m for m in c.get("volumeMounts", []) if m.get("mountPath") == "/etc/jcs/tls"]
    check(len(tls_mounts) == 1, f"{name}: the TLS secret is not mounted at /etc/jcs/tls")
    tls_volumes = [v["secret"]["secretName"] for v in spec.get("volumes", [])
                   if "secret" in v and tls_mounts and v["name"] == tls_mounts[0]["name"]]
    check(tls_volumes == ["jcs-tls"], f"{name}: /etc/jcs/tls is not the jcs-tls Secret")
    check(spec.get("terminationGracePeriodSeconds", 30) > 25,
          f"{name}: terminationGracePeriodSeconds must exceed shutdown_timeout (25s)")

coord = objects.get(("Deployment", "jcs-coordinator"))
if coord:
    check(coord["spec"]["replicas"] == 2, "coordinator: expected 2 replicas")
agent = objects.get(("StatefulSet", "jcs-agent"))
if agent:
    claims = [t["metadata"]["name"] for t in agent["spec"].get("volumeClaimTemplates", [])]
    check("space" in claims, "agent: no volumeClaimTemplate 'space'")
for kind, name in [("Deployment", "jcs-coordinator"), ("StatefulSet", "jcs-agent")]:
    spec = pod(kind, name)
    if spec:
        secrets = [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v]
        check("jcs-cluster-secret" in secrets, f"{name}: cluster secret not mounted")
check(("Secret", "jcs-cluster-secret") in objects, "no Secret jcs-cluster-secret")
svc = objects.get(("Service", "jcs-gateway"))
check(svc is not None, "no Service jcs-gateway")

for cm, key in [("jcs-coordinator", "coordinator.toml"), ("jcs-agent", "agent.toml"),
                ("jcs-gateway", "gateway.toml")]:
    obj = objects.get(("ConfigMap", cm))
    check(obj is not None, f"no ConfigMap {cm}")
    if obj:
        try:
            config = tomllib.loads(obj["data"][key])
        except (KeyError, tomllib.TOMLDecodeError) as e:
            errors.append(f"ConfigMap {cm}: {key}: {e}")
            continue
        tls = config.get("tls", {})
        check(not tls.get("insecure_plaintext", False), f"ConfigMap {cm}: insecure_plaintext")
        for k in ("ca", "cert", "key"):
            check(str(tls.get(k, "")).startswith("/etc/jcs/tls/"),
                  f"ConfigMap {cm}: tls.{k} is not a file of the jcs-tls Secret")

tls_secret = objects.get(("Secret", "jcs-tls"))
check(tls_secret is not None, "no Secret jcs-tls")
if tls_secret:
    keys = set(tls_secret.get("stringData", {})) | set(tls_secret.get("data", {}))
    for k in ("ca.pem", "coordinator.pem", "coordinator.key", "agent.pem", "agent.key",
              "gateway.pem", "gateway.key"):
        check(k in keys, f"Secret jcs-tls: no key {k}")

for e in errors:
    print(f"check-k8s: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check-k8s: {len(objects)} objects in {len(docs)} files OK")
