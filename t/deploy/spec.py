#!/usr/bin/env python3
"""What t/compose.t needs to know from the deployment files, as one JSON
object on stdout (PyYAML reads YAML anchors and merge keys as compose does).

  spec.py compose FILE
      {"services": {NAME: {"depends_on": {DEP: CONDITION},
                           "healthcheck": {"interval": s, "timeout": s,
                                           "retries": n, "start_period": s}
                                          or null}}}
  spec.py pod DEPLOYMENT CONTAINER [SECRETS.yaml] < rendered.yaml
      (rendered.yaml: kubectl kustomize's output) the container of that
      Deployment as a container engine would run it:
      {"image", "env": {NAME: VALUE}, "user", "read_only", "cap_drop",
       "no_new_privileges", "tmpfs": ["PATH:OPTIONS"],
       "files": {PATH: TEXT}, "notes": [TEXT]}
      env: the container's envFrom (ConfigMaps of the render; Secrets of the
      render or else of SECRETS.yaml, which stands for the ones created by
      hand; a missing Secret is an error unless optional) and env (literal
      values), plus the service links Kubernetes adds (the API server's, and
      every Service of the render unless enableServiceLinks is false) with
      made-up cluster addresses, plus what EKS's pod identity webhook adds
      for a service account annotated with an IAM role (IRSA: the role, the
      web identity token file, in files); emptyDirs as tmpfs mounts with the
      size limit.
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


def tmpfs_size(quantity):
    """A Kubernetes quantity (64Mi, 1Gi, 1000000) as tmpfs's size= value."""
    m = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|k|M|G)?", str(quantity))
    if not m:
        sys.exit(f"spec.py: sizeLimit {quantity} is not a quantity this follows")
    factor = {None: 1, "k": 1000, "M": 1000**2, "G": 1000**3,
              "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}[m.group(2)]
    return str(int(m.group(1)) * factor)


IRSA_TOKEN = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token"


def irsa_env(sa):
    """What EKS's pod identity webhook adds to the containers of a pod whose
    service account names an IAM role (it never replaces a variable the
    container sets)."""
    ann = (sa or {}).get("metadata", {}).get("annotations") or {}
    role = ann.get("eks.amazonaws.com/role-arn")
    if not role:
        return {}
    env = {"AWS_ROLE_ARN": role, "AWS_WEB_IDENTITY_TOKEN_FILE": IRSA_TOKEN}
    if ann.get("eks.amazonaws.com/sts-regional-endpoints") == "true":
        env["AWS_STS_REGIONAL_ENDPOINTS"] = "regional"
    return env


def pod(deployment, container, secrets_file=None):
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    by_kind = {}
    if secrets_file:
        with open(secrets_file) as f:
            for d in yaml.safe_load_all(f):
                if d and d["kind"] == "Secret":
                    by_kind.setdefault("Secret", {})[d["metadata"]["name"]] = d
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
    # the API server's own Service, which the kubelet links in every pod
    env.update({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
                "KUBERNETES_SERVICE_PORT_HTTPS": "443",
                "KUBERNETES_PORT": "tcp://10.96.0.1:443",
                "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
                "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
                "KUBERNETES_PORT_443_TCP_PORT": "443",
                "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1"})
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
                    sys.exit(f"spec.py: {kind} {ref['name']} is neither in the render nor in the Secrets file, and not optional")
                notes.append(f"optional {kind} {ref['name']} is not in the render: left out")
                continue
            data = dict(obj.get("data") or {})
            data.update(obj.get("stringData") or {})
            env.update({prefix + k: str(v) for k, v in data.items()})
    for e in ctr.get("env") or []:
        if "value" not in e:
            sys.exit(f"spec.py: env {e['name']} uses valueFrom, which this does not follow")
        env[e["name"]] = str(e["value"])
    files = {}
    irsa = irsa_env(by_kind.get("ServiceAccount", {}).get(podspec.get("serviceAccountName")))
    if irsa:
        for k, v in irsa.items():
            env.setdefault(k, v)
        # a projected service account token (a JWT STS would check)
        files[IRSA_TOKEN] = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl\n"
        notes.append("IRSA: the pod identity webhook's variables and token file added")
    psc, csc = podspec.get("securityContext") or {}, ctr.get("securityContext") or {}
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    vols = {v["name"]: v for v in podspec.get("volumes") or []}
    tmpfs = []
    for m in ctr.get("volumeMounts") or []:
        v = vols.get(m["name"], {})
        if "emptyDir" not in v:
            sys.exit(f"spec.py: volume {m['name']} is not an emptyDir, which this does not follow")
        # the kubelet makes an emptyDir writable by the pod (0777, and the
        # fsGroup's); podman 4.3 ignores a tmpfs mode= on a directory the
        # image has, so U (owned by the container's user) stands for that
        opts = ["rw", "U"]
        limit = (v["emptyDir"] or {}).get("sizeLimit")
        if limit:
            opts.append("size=" + tmpfs_size(limit))
        tmpfs.append(m["mountPath"] + ":" + ",".join(opts))
    return {"image": ctr["image"], "env": env,
            "user": f"{uid}:{gid}" if uid is not None else None,
            "read_only": bool(csc.get("readOnlyRootFilesystem")),
            "cap_drop": (csc.get("capabilities") or {}).get("drop") or [],
            "no_new_privileges": csc.get("allowPrivilegeEscalation") is False,
            "tmpfs": tmpfs, "files": files, "notes": notes}


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "compose":
        print(json.dumps(compose(sys.argv[2])))
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "pod":
        print(json.dumps(pod(*sys.argv[2:])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
