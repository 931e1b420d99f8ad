#!/usr/bin/env python3
"""What t/compose.t needs to know from the deployment files, as one JSON
object on stdout (PyYAML reads YAML anchors and merge keys as compose does).

  spec.py compose FILE
      {"services": {NAME: {"depends_on": {DEP: CONDITION},
                           "healthcheck": {"interval": s, "timeout": s,
                                           "retries": n, "start_period": s}
                                          or null}}}
  spec.py pod DEPLOYMENT CONTAINER < rendered.yaml   (kubectl kustomize)
      the container of that Deployment as a container engine would run it:
      {"image", "env": {NAME: VALUE}, "user", "read_only", "cap_drop",
       "no_new_privileges", "tmpfs": [PATH], "notes": [TEXT]}
      env: the container's envFrom (ConfigMaps of the render; Secrets the
      render lacks are skipped when optional, as in a cluster without them)
      and env (literal values), plus the service links Kubernetes adds for
      every Service of the render (enableServiceLinks defaults to true),
      with made-up cluster addresses.
"""
import json
import re
import sys

import yaml


def seconds(v, default):
    if v is None:
        return default
    if isinstance(v, (int, float)):
        return float(v)
    total, rest = 0.0, str(v).strip()
    for num, unit in re.findall(r"([0-9.]+)(ms|us|ns|h|m|s)", rest):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    return total


def compose(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    out = {}
    for name, svc in (doc.get("services") or {}).items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        hc = svc.get("healthcheck")
        if hc and not hc.get("disable"):
            hc = {"interval": seconds(hc.get("interval"), 30),
                  "timeout": seconds(hc.get("timeout"), 30),
                  "retries": int(hc.get("retries", 3)),
                  "start_period": seconds(hc.get("start_period"), 0)}
        else:
            hc = None
        out[name] = {"depends_on": {d: (c or {}).get("condition", "service_started")
                                    for d, c in deps.items()},
                     "healthcheck": hc}
    return {"services": out}


def link_vars(services):
    """Docker-links style variables, as the kubelet sets them."""
    env = {}
    for i, svc in enumerate(services):
        spec = svc.get("spec") or {}
        if spec.get("type") == "ExternalName" or spec.get("clusterIP") == "None":
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        ip = f"10.96.0.{10 + i}"
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{name}_PORT"] = f"tcp://{ip}:{ports[0]['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            base = f"{name}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[base + "_PROTO"] = proto.lower()
            env[base + "_PORT"] = str(p["port"])
            env[base + "_ADDR"] = ip
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
    return env


def pod(deployment, container):
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    dep = by_kind.get("Deployment", {}).get(deployment)
    if not dep:
        sys.exit(f"spec.py: no Deployment {deployment} in the render")
    podspec = dep["spec"]["template"]["spec"]
    ctr = next((c for c in podspec["containers"] if c["name"] == container), None)
    if not ctr:
        sys.exit(f"spec.py: no container {container} in Deployment {deployment}")
    notes, env = [], {}
    if podspec.get("enableServiceLinks", True):
        env.update(link_vars(by_kind.get("Service", {}).values()))
    for src in ctr.get("envFrom") or []:
        prefix = src.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if key not in src:
                continue
            ref = src[key]
            obj = by_kind.get(kind, {}).get(ref["name"])
            if obj is None:
                if not ref.get("optional"):
                    sys.exit(f"spec.py: {kind} {ref['name']} is not in the render and not optional")
                notes.append(f"optional {kind} {ref['name']} is not in the render: left out")
                continue
            data = dict(obj.get("data") or {})
            data.update(obj.get("stringData") or {})
            env.update({prefix + k: str(v) for k, v in data.items()})
    for e in ctr.get("env") or []:
        if "value" not in e:
            sys.exit(f"spec.py: env {e['name']} uses valueFrom, which this does not follow")
        env[e["name"]] = str(e["value"])
    psc, csc = podspec.get("securityContext") or {}, ctr.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    vols = {v["name"]: v for v in podspec.get("volumes") or []}
    tmpfs = []
    for m in ctr.get("volumeMounts") or []:
        v = vols.get(m["name"], {})
        if "emptyDir" not in v:
            sys.exit(f"spec.py: volume {m['name']} is not an emptyDir, which this does not follow")
        tmpfs.append(m["mountPath"])
    return {"image": ctr["image"], "env": env,
            "user": f"{uid}:{gid}" if uid is not None else None,
            "read_only": bool(csc.get("readOnlyRootFilesystem")),
            "cap_drop": (csc.get("capabilities") or {}).get("drop") or [],
            "no_new_privileges": csc.get("allowPrivilegeEscalation") is False,
            "tmpfs": tmpfs, "notes": notes}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "compose":
        print(json.dumps(compose(sys.argv[2])))
    elif len(sys.argv) == 4 and sys.argv[1] == "pod":
        print(json.dumps(pod(sys.argv[2], sys.argv[3])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
