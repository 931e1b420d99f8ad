#!/usr/bin/env python3
"""Checks of the deployment files for t/deploy.t. Prints one JSON object a
line: {"ok": bool, "name": "...", "diag": "..."} (and {"skip": "..."}), which
the Perl test turns into TAP.

  check.py k8s NAME RENDERED.yaml SECRETS.example.yaml
  check.py secrets SECRETS.example.yaml
  check.py compose ROOT
  check.py images ROOT              (Dockerfile stages, packages, libraries)
  check.py ingress-conf ROOT RENDERED.yaml
"""
import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import yaml


def result(ok, name, diag=""):
    diag = diag if len(diag) < 2000 else diag[:2000] + "..."
    print(json.dumps({"ok": bool(ok), "name": name, "diag": diag}), flush=True)


def skip(name, why):
    print(json.dumps({"skip": why, "name": name}), flush=True)


# ---------------------------------------------------------------------------
# Kubernetes

# Oldest and newest API versions we validate against: 1.29 is the oldest
# minor EKS still offers (extended support); the newest is the validator's.
K8S_VERSIONS = ["1.29"]


def k8s_validator():
    import kubernetes_validate
    from kubernetes_validate import utils

    # Each validate() call re-reads a 1.8 MB definitions file; cache them.
    utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)
    latest = utils.major_minor(kubernetes_validate.latest_version())
    versions = K8S_VERSIONS + [latest]
    return kubernetes_validate, utils, versions


def objmeta_validator(utils, version):
    """A validator for ObjectMeta alone, to check the metadata of custom
    resources, whose own schema (the CRD) is not available offline."""
    import jsonschema
    from referencing import Registry, Resource

    full = [v for v in utils.all_versions() if utils.major_minor(v) == utils.major_minor(version)][-1]
    defs = utils.schema_contents("kubernetes-json-schema/v%s-local-strict/_definitions.json" % full, version)
    defs_id = defs.get("$id", "_definitions.json")
    schema = {"$ref": defs_id + "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    registry = Registry().with_resource(defs_id, Resource.from_contents(defs))
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kn(o):
    return "%s/%s" % (o["kind"], o["metadata"]["name"])


def pod_spec(o):
    k = o["kind"]
    if k in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
        return o["spec"]["template"]["spec"]
    if k == "CronJob":
        return o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def pod_labels(o):
    return o["spec"]["template"]["metadata"].get("labels", {})


def selects(selector, labels):
    """matchLabels / matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        op, key, vals = e["operator"], e["key"], e.get("values", [])
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def is_ours(container):
    return re.search(r"(^|/)togglemaster/", container["image"]) is not None


def container_ports(c):
    return {p.get("name"): p["containerPort"] for p in c.get("ports", [])}


def check_k8s(name, rendered, secrets_path):
    kv, utils, versions = k8s_validator()
    docs = load_docs(rendered)
    secrets = {d["metadata"]["name"]: d for d in load_docs(secrets_path)}
    result(len(docs) > 10, "%s: renders %d objects" % (name, len(docs)))
    by_kind = {}
    for o in docs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o

    # -- schema validation, every object, strict (unknown fields rejected)
    for o in docs:
        api = o.get("apiVersion", "")
        if api.startswith("keda.sh/"):
            continue
        errs = []
        for v in versions:
            try:
                kv.validate(o, v, strict=True)
            except (kv.ValidationError, kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
                errs.append("k8s %s: %s" % (v, getattr(e, "message", str(e))))
        result(not errs, "%s: %s %s valid against the API schema of Kubernetes %s"
               % (name, api, kn(o), " and ".join(versions)), "; ".join(errs))

    # -- KEDA custom resources: checked by hand (see check_keda)
    check_keda(name, by_kind, utils, versions)

    # -- namespace and no committed secrets
    ns_objs = [o for o in docs if o["kind"] not in ("Namespace",)]
    wrong_ns = [kn(o) for o in ns_objs if o["metadata"].get("namespace") != "togglemaster"]
    result(not wrong_ns, "%s: every object is in namespace togglemaster" % name, ", ".join(wrong_ns))
    result("Secret" not in by_kind, "%s: renders no Secret (secrets are never committed)" % name,
           ", ".join(by_kind.get("Secret", {})))

    workloads = [o for o in docs if pod_spec(o) is not None]
    configmaps = by_kind.get("ConfigMap", {})

    # -- security settings on every pod and container
    for o in workloads:
        ps = pod_spec(o)
        psc = ps.get("securityContext", {})
        problems = []
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append("pod seccompProfile is not RuntimeDefault")
        if ps.get("automountServiceAccountToken") is not False:
            problems.append("pod mounts a service account token")
        for c in ps.get("initContainers", []) + ps["containers"]:
            sc = c.get("securityContext", {})
            cn = c["name"]
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                problems.append("%s: runAsNonRoot not set" % cn)
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            if uid is None or uid == 0:
                problems.append("%s: no non-zero runAsUser" % cn)
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append("%s: readOnlyRootFilesystem not true" % cn)
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append("%s: allowPrivilegeEscalation not false" % cn)
            if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
                problems.append("%s: capabilities do not drop ALL" % cn)
            if sc.get("capabilities", {}).get("add"):
                problems.append("%s: adds capabilities" % cn)
            if sc.get("privileged"):
                problems.append("%s: privileged" % cn)
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(kind, {}):
                        problems.append("%s: no %s.%s" % (cn, kind, r))
        result(not problems, "%s: %s is non-root, read-only, without capabilities, with requests and limits"
               % (name, kn(o)), "; ".join(problems))

    # -- probes: every Deployment; ours on /health/live and /health/ready
    for o in by_kind.get("Deployment", {}).values():
        problems = []
        for c in pod_spec(o)["containers"]:
            ports = container_ports(c)
            for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
                p = c.get(probe)
                if not p:
                    problems.append("%s: no %s" % (c["name"], probe))
                    continue
                if not is_ours(c):
                    continue
                hg = p.get("httpGet")
                if not hg or hg.get("path") != path:
                    problems.append("%s: %s is not GET %s" % (c["name"], probe, path))
                elif hg["port"] not in ports and hg["port"] not in ports.values():
                    problems.append("%s: %s port %s is not a container port" % (c["name"], probe, hg["port"]))
        sel = o["spec"]["selector"]
        if not selects(sel, pod_labels(o)):
            problems.append("selector does not match the pod labels")
        result(not problems, "%s: Deployment/%s has liveness and readiness probes%s"
               % (name, o["metadata"]["name"],
                  " on /health/live and /health/ready" if any(is_ours(c) for c in pod_spec(o)["containers"]) else ""),
               "; ".join(problems))

    # -- config references resolve: ConfigMaps rendered, Secrets templated
    for o in workloads:
        problems = []
        for c in pod_spec(o)["containers"]:
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef and ef["configMapRef"]["name"] not in configmaps:
                    problems.append("ConfigMap %s missing" % ef["configMapRef"]["name"])
                if "secretRef" in ef and not ef["secretRef"].get("optional") \
                        and ef["secretRef"]["name"] not in secrets:
                    problems.append("Secret %s not in secrets.example.yaml" % ef["secretRef"]["name"])
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and (ref["name"] not in secrets
                            or ref["key"] not in secrets[ref["name"]].get("stringData", {})):
                    problems.append("Secret %s key %s not in secrets.example.yaml" % (ref["name"], ref["key"]))
        sa = pod_spec(o).get("serviceAccountName")
        if sa not in by_kind.get("ServiceAccount", {}):
            problems.append("ServiceAccount %s missing" % sa)
        result(not problems, "%s: %s refers only to ConfigMaps, Secrets and ServiceAccounts that exist"
               % (name, kn(o)), "; ".join(problems))

    deployments = by_kind.get("Deployment", {})
    ours = {n: d for n, d in deployments.items() if any(is_ours(c) for c in pod_spec(d)["containers"])}
    result(set(ours) == {"auth", "flags", "targeting", "analytics", "gateway"},
           "%s: Deployments of auth, flags, targeting, analytics, gateway" % name, ", ".join(sorted(ours)))

    def env_of(d):
        env = {}
        for c in pod_spec(d)["containers"]:
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    env.update(configmaps.get(ef["configMapRef"]["name"], {}).get("data", {}))
                if "secretRef" in ef:   # e.g. REDIS_URL, which may carry a password
                    env.update(secrets.get(ef["secretRef"]["name"], {}).get("stringData", {}))
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = e["value"]
        return env

    # -- daemons: settings, migrations as Jobs
    jobs = by_kind.get("Job", {})
    for d in ("auth", "flags", "targeting"):
        if d not in ours:
            continue
        env = env_of(ours[d])
        want = {"TM_SKIP_MIGRATE": "1", "REDIS_URL": None}
        if d != "auth":
            want["AUTH_SERVICE_URL"] = "http://auth:8001"
        problems = ["%s=%s" % (k, env.get(k)) for k, v in want.items()
                    if k not in env or (v is not None and env[k] != v)]
        result(not problems, "%s: %s runs with TM_SKIP_MIGRATE=1 and its settings" % (name, d), ", ".join(problems))
        j = jobs.get(d + "-migrate")
        jc = pod_spec(j)["containers"][0] if j else None
        ok = (jc is not None and jc.get("args") == ["--migrate"]
              and jc["image"] == pod_spec(ours[d])["containers"][0]["image"]
              and pod_spec(j)["restartPolicy"] in ("Never", "OnFailure"))
        result(ok, "%s: Job %s-migrate runs the same image with --migrate" % (name, d))

    # -- every Service selects pods (ExternalName aside), ports resolve
    for s in by_kind.get("Service", {}).values():
        spec = s["spec"]
        if spec.get("type") == "ExternalName":
            result(bool(spec.get("externalName")), "%s: Service/%s is an alias of %s"
                   % (name, s["metadata"]["name"], spec.get("externalName")))
            continue
        targets = [w for w in workloads if selects({"matchLabels": spec.get("selector", {})}, pod_labels(w))
                   and w["kind"] != "Job"]
        problems = [] if targets else ["selects no workload"]
        for p in spec.get("ports", []):
            tp = p.get("targetPort", p["port"])
            if not any(tp in container_ports(c) or tp in container_ports(c).values()
                       for w in targets for c in pod_spec(w)["containers"]):
                problems.append("targetPort %s not exposed" % tp)
        result(not problems, "%s: Service/%s selects %s" % (name, s["metadata"]["name"],
                                                          ", ".join(kn(w) for w in targets)), "; ".join(problems))

    # -- PodDisruptionBudget for each of our Deployments
    pdbs = by_kind.get("PodDisruptionBudget", {}).values()
    for n, d in ours.items():
        covering = [p for p in pdbs if selects(p["spec"]["selector"], pod_labels(d))]
        result(len(covering) == 1, "%s: Deployment/%s has a PodDisruptionBudget" % (name, n))

    # -- gateway: LoadBalancer (unless the ingress component) and CPU HPA
    hpas = by_kind.get("HorizontalPodAutoscaler", {})
    gw_hpa = [h for h in hpas.values() if h["spec"]["scaleTargetRef"]["name"] == "gateway"]
    ok = len(gw_hpa) == 1 and any(m.get("resource", {}).get("name") == "cpu" for m in gw_hpa[0]["spec"]["metrics"]) \
        and gw_hpa[0]["spec"]["minReplicas"] >= 2
    result(ok, "%s: the gateway scales on CPU (HPA, at least 2 replicas)" % name)
    for h in hpas.values():
        t = h["spec"]["scaleTargetRef"]
        result(t["kind"] == "Deployment" and t["name"] in deployments
               and "replicas" not in deployments[t["name"]]["spec"],
               "%s: HPA/%s targets a Deployment that leaves its replica count to it" % (name, h["metadata"]["name"]))
    gw_svc = by_kind.get("Service", {}).get("gateway", {}).get("spec", {})
    ingress = by_kind.get("Ingress", {})
    result(gw_svc.get("type") == "LoadBalancer" or ingress,
           "%s: the gateway is reachable from outside (LoadBalancer or Ingress)" % name)
    for ing in ingress.values():
        paths = {p["path"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
        backends = {p["backend"]["service"]["name"] for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
        result({"/auth", "/flags", "/targeting", "/evaluate", "/analytics"} <= paths and backends == {"gateway"},
               "%s: Ingress/%s sends the original prefixes to the gateway" % (name, ing["metadata"]["name"]))

    # -- network policies: who reaches whom
    check_netpols(name, by_kind, workloads)

    # -- the components
    if "without-keda" in name:
        result("ScaledObject" not in by_kind and "TriggerAuthentication" not in by_kind
               and isinstance(deployments["analytics"]["spec"].get("replicas"), int),
               "%s: no KEDA objects; the analytics worker has a fixed replica count" % name)
    if "ingress" in name:
        result(bool(ingress) and gw_svc.get("type") == "ClusterIP",
               "%s: an Ingress in front of a ClusterIP gateway Service" % name)

    # -- IRSA in the aws overlay
    if name.startswith("aws"):
        sas = by_kind.get("ServiceAccount", {})
        for n in ("gateway", "analytics"):
            arn = sas.get(n, {}).get("metadata", {}).get("annotations", {}).get("eks.amazonaws.com/role-arn", "")
            result(re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+", arn) is not None,
                   "%s: ServiceAccount/%s is annotated with an IAM role (IRSA)" % (name, n), arn)
            result(pod_spec(deployments[n])["serviceAccountName"] == n,
                   "%s: Deployment/%s runs as ServiceAccount %s" % (name, n, n))
        for n, d in ours.items():
            img = pod_spec(d)["containers"][0]["image"]
            result(re.match(r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/togglemaster/", img) is not None,
                   "%s: Deployment/%s pulls from ECR" % (name, n), img)

    # -- the analytics worker's queue and table settings
    if "analytics" in ours:
        env = env_of(ours["analytics"])
        ok = all(env.get(k) for k in ("AWS_SQS_URL", "AWS_REGION", "AWS_DYNAMODB_TABLE")) \
            and env["AWS_SQS_URL"].endswith("/togglemaster-events")
        result(ok, "%s: the analytics worker is configured for the queue togglemaster-events" % name,
               json.dumps({k: env.get(k) for k in ("AWS_SQS_URL", "AWS_REGION", "AWS_DYNAMODB_TABLE")}))


def check_netpols(name, by_kind, workloads):
    pols = list(by_kind.get("NetworkPolicy", {}).values())
    deny = [p for p in pols if p["spec"]["podSelector"] == {} and "Ingress" in p["spec"].get("policyTypes", [])
            and not p["spec"].get("ingress")]
    result(len(deny) == 1, "%s: a default-deny ingress NetworkPolicy" % name)
    pods = {}
    for w in workloads:
        pods[w["metadata"]["name"]] = pod_labels(w)
    def allowed(src, dst, port):
        """Is a TCP connection from pod src (or from outside) to dst:port allowed?"""
        dl = pods[dst]
        sl = pods.get(src)
        applying = [p for p in pols if selects(p["spec"]["podSelector"], dl)
                    and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
        if not applying:
            return True
        for p in applying:
            for rule in p["spec"].get("ingress") or []:
                ports = rule.get("ports")
                if ports and not any(pp.get("port") == port for pp in ports):
                    continue
                frm = rule.get("from")
                if not frm:
                    return True
                for peer in frm:
                    if sl is not None and set(peer) == {"podSelector"} and selects(peer["podSelector"], sl):
                        return True
        return False

    expect = [
        ("__outside__", "gateway", 8080, True), ("__outside__", "gateway", 8004, True),
        ("gateway", "auth", 8001, True), ("gateway", "flags", 8002, True),
        ("gateway", "targeting", 8003, True), ("gateway", "analytics", 8005, True),
        ("flags", "auth", 8001, True), ("targeting", "auth", 8001, True),
        ("__outside__", "auth", 8001, False), ("__outside__", "flags", 8002, False),
        ("__outside__", "targeting", 8003, False), ("__outside__", "analytics", 8005, False),
        # the usage API checks keys as the daemons do (docs/usage.md)
        ("auth", "flags", 8002, False), ("analytics", "auth", 8001, True),
        # promotion and environment deletion: flags calls targeting with the
        # caller's key (docs/environments.md)
        ("flags", "targeting", 8003, True), ("targeting", "flags", 8002, False),
    ]
    if "postgres" in pods:
        expect += [
            ("auth", "postgres", 5432, True), ("flags", "postgres", 5432, True),
            ("targeting", "postgres", 5432, True), ("auth-migrate", "postgres", 5432, True),
            ("flags-migrate", "postgres", 5432, True), ("targeting-migrate", "postgres", 5432, True),
            ("gateway", "postgres", 5432, False), ("analytics", "postgres", 5432, False),
            ("__outside__", "postgres", 5432, False), ("redis", "postgres", 5432, False),
        ]
    if "redis" in pods:
        expect += [
            ("auth", "redis", 6379, True), ("flags", "redis", 6379, True),
            ("targeting", "redis", 6379, True), ("gateway", "redis", 6379, True),
            ("analytics", "redis", 6379, True), ("__outside__", "redis", 6379, False),
            ("auth-migrate", "redis", 6379, False),
        ]
    for src, dst, port, want in expect:
        if dst not in pods or (src != "__outside__" and src not in pods):
            continue
        got = allowed(src, dst, port)
        result(got == want, "%s: NetworkPolicies %s %s -> %s:%d" % (
            name, "allow" if want else "refuse", "outside" if src == "__outside__" else src, dst, port))


# KEDA's CRD schemas are not shipped with kubernetes-validate (it carries the
# core API only) and cannot be fetched here, so the custom resources get
# their ObjectMeta checked against the core schema and their spec checked by
# hand against KEDA's documented fields (keda.sh/v1alpha1, KEDA 2.13+).
SCALEDOBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                     "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
SQS_METADATA = {"queueURL", "queueURLFromEnv", "queueLength", "activationQueueLength", "awsRegion",
                "awsEndpoint", "identityOwner", "scaleOnInFlight", "scaleOnDelayed"}
TRIGGERAUTH_SPEC = {"podIdentity", "secretTargetRef", "env", "hashiCorpVault", "azureKeyVault",
                    "awsSecretManager", "gcpSecretManager", "configMapTargetRef", "boundServiceAccountToken"}


def check_keda(name, by_kind, utils, versions):
    sos = by_kind.get("ScaledObject", {})
    tas = by_kind.get("TriggerAuthentication", {})
    deployments = by_kind.get("Deployment", {})
    for o in list(sos.values()) + list(tas.values()):
        errs = []
        for v in versions:
            errs += ["k8s %s: %s" % (v, e.message) for e in objmeta_validator(utils, v).iter_errors(o["metadata"])]
        result(o["apiVersion"] == "keda.sh/v1alpha1" and not errs,
               "%s: %s is keda.sh/v1alpha1 with valid metadata" % (name, kn(o)), "; ".join(errs))
    for so in sos.values():
        s = so["spec"]
        p = []
        p += ["unknown spec field %s" % k for k in set(s) - SCALEDOBJECT_SPEC]
        tgt = s.get("scaleTargetRef", {}).get("name")
        if tgt not in deployments:
            p.append("scaleTargetRef %s is not a Deployment here" % tgt)
        mn, mx = s.get("minReplicaCount"), s.get("maxReplicaCount")
        if not (isinstance(mn, int) and isinstance(mx, int) and (mn, mx) == (1, 10)):
            p.append("replicas %r..%r, want 1..10" % (mn, mx))
        for k in ("pollingInterval", "cooldownPeriod"):
            if k in s and not (isinstance(s[k], int) and s[k] > 0):
                p.append("%s is not a positive integer" % k)
        trig = s.get("triggers")
        if not (isinstance(trig, list) and trig):
            p.append("no triggers")
            trig = []
        for t in trig:
            p += ["unknown trigger field %s" % k for k in set(t) - TRIGGER_KEYS]
            md = t.get("metadata", {})
            if not all(isinstance(v, str) for v in md.values()):
                p.append("trigger metadata values must be strings")
            if t.get("type") != "aws-sqs-queue":
                p.append("trigger type %s" % t.get("type"))
                continue
            p += ["unknown aws-sqs-queue field %s" % k for k in set(md) - SQS_METADATA]
            if not (md.get("queueURL") or md.get("queueURLFromEnv")):
                p.append("neither queueURL nor queueURLFromEnv")
            if not md.get("awsRegion"):
                p.append("no awsRegion")
            if "queueLength" in md and not md["queueLength"].isdigit():
                p.append("queueLength is not a number")
            env_name = md.get("queueURLFromEnv")
            if env_name and tgt in deployments:
                # KEDA resolves it from the target container's env and envFrom.
                env = set()
                for c in pod_spec(deployments[tgt])["containers"]:
                    env |= {e["name"] for e in c.get("env", [])}
                    for ef in c.get("envFrom", []):
                        cm = by_kind.get("ConfigMap", {}).get(ef.get("configMapRef", {}).get("name"), {})
                        env |= set(cm.get("data", {}))
                if env_name not in env:
                    p.append("queueURLFromEnv %s is not in %s's environment" % (env_name, tgt))
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref and ref not in tas:
                p.append("authenticationRef %s missing" % ref)
        result(not p, "%s: ScaledObject/%s scales %s from 1 to 10 on the SQS queue (fields checked by hand)"
               % (name, so["metadata"]["name"], tgt), "; ".join(p))
    for ta in tas.values():
        s = ta["spec"]
        p = ["unknown spec field %s" % k for k in set(s) - TRIGGERAUTH_SPEC]
        if "podIdentity" in s:
            pi = s["podIdentity"]
            if pi.get("provider") != "aws":
                p.append("podIdentity provider %s" % pi.get("provider"))
            if "roleArn" in pi and "identityOwner" in pi:
                p.append("roleArn and identityOwner are mutually exclusive")
            if pi.get("identityOwner", "keda") not in ("keda", "workload"):
                p.append("identityOwner %s" % pi.get("identityOwner"))
        for r in s.get("secretTargetRef", []):
            if set(r) != {"parameter", "name", "key"}:
                p.append("secretTargetRef entry needs exactly parameter, name, key")
            elif r["parameter"] not in ("awsAccessKeyID", "awsSecretAccessKey", "awsSessionToken", "awsRoleArn"):
                p.append("unknown parameter %s" % r["parameter"])
        if not ("podIdentity" in s or s.get("secretTargetRef")):
            p.append("no way to authenticate")
        result(not p, "%s: TriggerAuthentication/%s (fields checked by hand)" % (name, ta["metadata"]["name"]),
               "; ".join(p))


def check_secrets(path):
    kv, utils, versions = k8s_validator()
    docs = load_docs(path)
    for o in docs:
        errs = []
        for v in versions:
            try:
                kv.validate(o, v, strict=True)
            except kv.ValidationError as e:
                errs.append(e.message)
        values = list((o.get("stringData") or {}).values())
        result(not errs and o["kind"] == "Secret" and "data" not in o,
               "secrets.example.yaml: %s is a valid Secret template" % kn(o), "; ".join(errs))
        result(any("CHANGE_ME" in v for v in values),
               "secrets.example.yaml: %s holds placeholders only" % kn(o))


# ---------------------------------------------------------------------------
# Dockerfile

def parse_dockerfile(path):
    """Stages in order: {name, from, instructions: [(op, args)]}."""
    stages = []
    text = open(path).read()
    text = re.sub(r"\\\n", " ", text)           # line continuations
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            stages.append({"name": m.group(2) or str(len(stages)), "from": m.group(1), "ins": []})
        elif stages:
            stages[-1]["ins"].append((op, args.strip()))
    return stages


def stage_chain(stages, name):
    by = {s["name"]: s for s in stages}
    chain = []
    while name in by:
        chain.append(by[name])
        name = by[name]["from"]
    return chain, name     # name: the base image at the end of the chain


def apt_packages(stage):
    pkgs = []
    for op, args in stage["ins"]:
        if op != "RUN" or "apt-get install" not in args:
            continue
        for cmd in re.split(r"&&|;", args):
            if "apt-get install" not in cmd:
                continue
            for w in shlex.split(cmd.split("apt-get install", 1)[1]):
                if not w.startswith("-"):
                    pkgs.append(w)
    return pkgs


def copies(stage):
    """(flags, sources, dest) of each COPY."""
    out = []
    for op, args in stage["ins"]:
        if op not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        flags = [w for w in words if w.startswith("--")]
        rest = [w for w in words if not w.startswith("--")]
        out.append((flags, rest[:-1], rest[-1]))
    return out


TARGETS = ("auth", "flags", "targeting", "analytics", "gateway")


def check_images(root):
    df = os.path.join(root, "compose", "Dockerfile")
    stages = parse_dockerfile(df)
    names = [s["name"] for s in stages]
    result(all(t in names for t in TARGETS), "Dockerfile has the targets %s" % ", ".join(TARGETS), ", ".join(names))
    build = [s for s in stages if s["name"] == "build"]
    result(build and build[0]["from"].startswith("debian:bookworm")
           and any(op == "RUN" and re.search(r"\bmake\b", a) for op, a in build[0]["ins"]),
           "Dockerfile: the build stage runs make on Debian 12")
    for s in stages:
        for flags, srcs, dest in copies(s):
            if any(f.startswith("--from=") for f in flags):
                continue
            for src in srcs:
                if src == ".":
                    continue
                p = os.path.join(root, src)
                if src == "nginx-conf/ingress.conf" and not os.path.exists(p):
                    skip("Dockerfile: COPY %s" % src, "nginx-conf/ingress.conf is not written yet (nginx module's issue)")
                    continue
                result(os.path.exists(p), "Dockerfile (%s): COPY source %s exists" % (s["name"], src))
    if shutil.which("apt-cache"):
        apt_show([p.split("=")[0] for st in stages if st["name"] != "build" for p in apt_packages(st)])
    for t in TARGETS:
        chain, base = stage_chain(stages, t)
        if not chain:
            continue
        result(base == "debian:bookworm-slim", "Dockerfile: %s runs on debian:bookworm-slim" % t, base)
        users = [a for st in chain for op, a in st["ins"] if op == "USER"]
        result(users and not re.match(r"^(root|0)(:|$)", users[0]),
               "Dockerfile: %s runs as a non-root user" % t, users[0] if users else "no USER")
        pkgs = [p for st in chain for p in apt_packages(st)]
        dev = [p for p in pkgs if re.search(r"-dev(=|$)|^build-essential|^gcc|^make$", p)]
        result(pkgs and not dev, "Dockerfile: %s installs runtime packages only" % t, " ".join(dev))
        ep = [a for st in chain for op, a in st["ins"] if op == "ENTRYPOINT"]
        hc = [a for st in chain for op, a in st["ins"] if op == "HEALTHCHECK"]
        result(ep and hc, "Dockerfile: %s has an ENTRYPOINT and a HEALTHCHECK" % t)
        check_libraries(root, t, chain, pkgs)


# apt-cache rebuilds its cache on every call where Debian's container
# config disables the cache file (about 2 s here), so calls are batched.
APT_SHOWN = None


def apt_show(pkgs):
    """The subset of pkgs Debian knows, from one apt-cache call."""
    global APT_SHOWN
    if APT_SHOWN is None:
        APT_SHOWN = {}
    todo = [p for p in pkgs if p not in APT_SHOWN]
    if todo:
        r = subprocess.run(["apt-cache", "show", "--no-all-versions"] + todo, capture_output=True, text=True)
        for block in r.stdout.split("\n\n"):
            m = re.search(r"^Package: (\S+)$", block, re.M)
            if m:
                APT_SHOWN[m.group(1)] = block
        for p in todo:
            APT_SHOWN.setdefault(p, None)
    return {p for p in pkgs if APT_SHOWN.get(p)}


@functools.lru_cache(maxsize=None)
def dependency_closure(pkgs):
    r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
                        "--no-breaks", "--no-replaces", "--no-enhances"] + sorted(pkgs),
                       capture_output=True, text=True)
    return {line.strip() for line in r.stdout.splitlines() if line and not line.startswith(" ")}


def check_libraries(root, target, chain, pkgs):
    """Each built binary's shared libraries come from the packages the
    target's runtime stage installs (or their dependencies, or the base)."""
    if not subprocess.run(["sh", "-c", "command -v apt-cache && command -v objdump && command -v dpkg"],
                          capture_output=True).returncode == 0:
        skip("Dockerfile: %s libraries" % target, "apt-cache, objdump or dpkg missing")
        return
    pkgs = [p.split("=")[0] for p in pkgs]
    known = apt_show(pkgs)
    missing = [p for p in pkgs if p not in known]
    result(not missing, "Dockerfile: the packages %s installs exist in Debian (apt-cache show)" % target,
           " ".join(missing))
    binaries = []
    for st in chain:
        for flags, srcs, dest in copies(st):
            if "--from=build" in flags:
                binaries += [re.sub(r"^/src/", "", s) for s in srcs if re.search(r"togglemaster|\.so$", s)]
    closure = dependency_closure(frozenset(pkgs))
    for b in binaries:
        path = os.path.join(root, b)
        if not os.path.exists(path):
            skip("Dockerfile: %s's %s" % (target, b), "%s is not built yet" % b)
            continue
        od = subprocess.run(["objdump", "-p", path], capture_output=True, text=True).stdout
        needed = re.findall(r"NEEDED\s+(\S+)", od)
        problems = []
        pkg_of = lib_packages(needed)
        for soname in needed:
            pkg = pkg_of[soname]
            if pkg is None:
                problems.append("%s: no package provides it here" % soname)
            elif pkg not in closure and not base_package(pkg):
                problems.append("%s (%s) not installed by the image" % (soname, pkg))
        result(needed and not problems, "Dockerfile: %s's %s finds all its libraries (%s)"
               % (target, os.path.basename(b), ", ".join(needed)), "; ".join(problems))


@functools.lru_cache(maxsize=None)
def ldconfig_paths():
    out = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    paths = {}
    for m in re.finditer(r"^\s*(\S+) \(([^)]*)\) => (\S+)$", out, re.M):
        if not re.search(r"/lib(32|x32)/", m.group(3)):    # the native ABI only
            paths.setdefault(m.group(1), m.group(3))
    return paths


LIB_PACKAGES = {}


def lib_packages(sonames):
    """soname -> Debian package, with one dpkg -S call for all of them."""
    todo = {}
    for so in sonames:
        path = ldconfig_paths().get(so)
        if so in LIB_PACKAGES or path is None:
            LIB_PACKAGES.setdefault(so, None)
            continue
        # dpkg records some libraries under /lib, others under /usr/lib.
        for c in {path, os.path.realpath(path), re.sub(r"^/usr/lib/", "/lib/", path),
                  re.sub(r"^/lib/", "/usr/lib/", path)}:
            todo[c] = so
    if todo:
        r = subprocess.run(["dpkg", "-S"] + sorted(todo), capture_output=True, text=True)
        for line in r.stdout.splitlines():
            pkg, _, path = line.partition(": ")
            if path in todo:
                LIB_PACKAGES[todo[path]] = pkg.split(":")[0].split(",")[0]
    return {so: LIB_PACKAGES.get(so) for so in sonames}


def base_package(pkg):
    """Essential or required packages are in debian:bookworm-slim."""
    apt_show([pkg])
    block = APT_SHOWN.get(pkg) or ""
    return re.search(r"^(Essential: yes|Priority: required)$", block, re.M) is not None


# ---------------------------------------------------------------------------
# docker compose

def check_compose(root):
    cdir = os.path.join(root, "compose")
    path = os.path.join(cdir, "docker-compose.yml")
    with open(path) as f:
        doc = yaml.safe_load(f)
    svcs = doc.get("services", {})
    want = {"postgres", "redis", "localstack", "auth", "flags", "targeting", "analytics", "gateway"}
    result(want <= set(svcs), "compose: services %s" % ", ".join(sorted(want)), ", ".join(sorted(svcs)))
    stages = parse_dockerfile(os.path.join(cdir, "Dockerfile"))
    stage_names = {s["name"] for s in stages}

    for n, s in sorted(svcs.items()):
        hc = s.get("healthcheck") or {}
        test = hc.get("test")
        result(bool(test) and not hc.get("disable") and test != ["NONE"], "compose: %s has a healthcheck" % n)
        deps = s.get("depends_on") or {}
        bad = []
        if isinstance(deps, list):
            bad = ["%s (no condition)" % d for d in deps]
        else:
            for d, spec in deps.items():
                if d not in svcs:
                    bad.append("%s (no such service)" % d)
                elif (spec or {}).get("condition") != "service_healthy":
                    bad.append("%s (condition %s)" % (d, (spec or {}).get("condition")))
        if deps:
            result(not bad, "compose: %s waits for %s to be healthy" % (n, ", ".join(sorted(deps))), "; ".join(bad))
        b = s.get("build")
        if b:
            ctx = os.path.normpath(os.path.join(cdir, b.get("context", ".")))
            dfp = os.path.join(ctx, b.get("dockerfile", "Dockerfile"))
            result(os.path.isdir(ctx) and os.path.isfile(dfp),
                   "compose: %s builds from %s" % (n, os.path.relpath(dfp, root)))
            result(b.get("target") in stage_names, "compose: %s's target %s is a Dockerfile stage" % (n, b.get("target")))
            # healthcheck tool present in the image
            chain, _ = stage_chain(stages, b.get("target"))
            tool = test[1] if isinstance(test, list) and len(test) > 1 and test[0] == "CMD" else None
            if tool and not tool.startswith("/"):
                installed = any(dest.rstrip("/").endswith("/" + tool) for st in chain for _, _, dest in copies(st))
                result(installed, "compose: %s's healthcheck command %s is in its image" % (n, tool))
            if n != "gateway":
                result(s.get("read_only") is True and "ALL" in (s.get("cap_drop") or []),
                       "compose: %s runs read-only without capabilities" % n)
        for v in s.get("volumes", []) or []:
            src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
            if src.startswith(".") or src.startswith("/"):
                p = os.path.normpath(os.path.join(cdir, src))
                ok = os.path.exists(p)
                if ok and "/init/" in v:
                    ok = os.access(p, os.X_OK)
                result(ok, "compose: %s mounts %s, which exists%s" % (
                    n, os.path.relpath(p, root), " and is executable" if "/init/" in v else ""))

    ports = set()
    for s in svcs.values():
        for p in s.get("ports", []) or []:
            # host ports as compose publishes them by default: ${VAR:-8001}
            # is 8001 unless VAR is set
            p = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", str(p))
            parts = p.split(":")
            ports.add(int(parts[-2]) if len(parts) >= 2 else int(parts[0]))
    result({8001, 8002, 8003, 8004, 8005, 8080} <= ports, "compose: the original ports 8001-8005 and 8080 are published",
           " ".join(map(str, sorted(ports))))

    def env(n):
        e = svcs.get(n, {}).get("environment") or {}
        return e if isinstance(e, dict) else dict(x.split("=", 1) for x in e)

    for n, keys in (("auth", ["DATABASE_URL", "REDIS_URL", "MASTER_KEY"]),
                    ("flags", ["DATABASE_URL", "REDIS_URL", "AUTH_SERVICE_URL", "TARGETING_SERVICE_URL"]),
                    ("targeting", ["DATABASE_URL", "REDIS_URL", "AUTH_SERVICE_URL"]),
                    ("analytics", ["AWS_SQS_URL", "AWS_DYNAMODB_TABLE", "AWS_REGION", "AWS_ENDPOINT_URL"]),
                    ("gateway", ["AWS_SQS_URL", "AWS_REGION", "AWS_ENDPOINT_URL"])):
        missing = [k for k in keys if k not in env(n)]
        result(not missing, "compose: %s gets %s" % (n, ", ".join(keys)), "missing " + " ".join(missing))
    mk = str(env("auth").get("MASTER_KEY", ""))
    result(re.fullmatch(r"\$\{MASTER_KEY:\?[^}]+\}", mk) is not None,
           "compose: MASTER_KEY has no default (a known key would mint API keys)", mk)
    init = open(os.path.join(cdir, "localstack", "init-aws.sh")).read()
    q = re.search(r"queue=\$\{TM_QUEUE_NAME:-([^}]+)\}", init)
    t = re.search(r"table=\$\{AWS_DYNAMODB_TABLE:-([^}]+)\}", init)
    a = env("analytics")
    result(q and t and a.get("AWS_SQS_URL", "").endswith("/" + q.group(1))
           and a.get("AWS_DYNAMODB_TABLE") == t.group(1) and env("gateway").get("AWS_SQS_URL") == a.get("AWS_SQS_URL"),
           "compose: the worker and the gateway use the queue and table the init script creates")


def check_ingress_conf(root, rendered):
    """nginx-conf/ingress.conf against what compose and Kubernetes give it:
    every @NAME@ gets a value (the gateway's entry point fills them from the
    environment), it listens where the Services send traffic, answers the
    probes, and proxies to hosts that are Service names."""
    conf = open(os.path.join(root, "nginx-conf", "ingress.conf")).read()
    code = re.sub(r"#.*", "", conf)
    # MODULE, RUN, RESOLVER and CONSOLE have defaults in the entry point,
    # which derives REDIS_MODE from REDIS_CLUSTER (default 0)
    names = set(re.findall(r"@([A-Z][A-Z0-9_]*)@", code)) - {"MODULE", "RUN", "RESOLVER", "CONSOLE",
                                                              "REDIS_MODE"}
    # and the variables nginx reads itself (togglemaster_sse_secret env:NAME)
    names |= set(re.findall(r"\benv:([A-Za-z_][A-Za-z0-9_]*)", code))
    with open(os.path.join(root, "compose", "docker-compose.yml")) as f:
        services = yaml.safe_load(f)["services"]
    compose_env = set(services["gateway"].get("environment") or {})
    docs = load_docs(rendered)
    k8s_env = set()
    for o in docs:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("gateway-config"):
            k8s_env |= set(o.get("data", {}))
    # and the Secrets the gateway reads (REDIS_URL: redis-secret), as templated
    secrets = {o["metadata"]["name"]: o for o in load_docs(os.path.join(root, "k8s", "base", "secrets.example.yaml"))}
    for o in docs:
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway":
            for c in o["spec"]["template"]["spec"]["containers"]:
                for ef in c.get("envFrom", []):
                    if "secretRef" in ef:
                        k8s_env |= set(secrets.get(ef["secretRef"]["name"], {}).get("stringData", {}))
    result(names <= compose_env, "ingress.conf placeholders and env: variables (%s) are set by compose" % " ".join(sorted(names)),
           "missing: " + " ".join(sorted(names - compose_env)))
    result(names <= k8s_env, "ingress.conf placeholders and env: variables (%s) are set by gateway-config or its Secrets" % " ".join(sorted(names)),
           "missing: " + " ".join(sorted(names - k8s_env)))
    listens = {int(m) for m in re.findall(r"^\s*listen\s+(?:[\w.\[\]:]*:)?(\d+)", code, re.M)}
    result({8004, 8080} <= listens, "ingress.conf listens on 8004 and 8080", " ".join(map(str, sorted(listens))))
    for path in ("/health/live", "/health/ready"):
        result(re.search(r"location\s+(=\s*)?%s\s*\{" % re.escape(path), code) is not None,
               "ingress.conf answers %s (the gateway's probes)" % path)
    # every OFREP location lists an event stream, and serves it next to it
    ofrep = re.findall(r"location\s+(/[\w/]*ofrep/v1/)\s*\{([^}]*)\}", code)
    streams = set(re.findall(r"location\s+=\s*(/[\w/]*ofrep/v1/stream)\s*\{[^}]*togglemaster_sse\s+on;", code))
    bad = [loc for loc, body in ofrep
           if not re.search(r'togglemaster_sse_url\s+"[^"]*%sstream";' % re.escape(loc), body)
           or loc + "stream" not in streams]
    result(ofrep and not bad, "ingress.conf: each OFREP location (%s) lists its event stream, served next to it"
           % " ".join(sorted({loc for loc, _ in ofrep})), "without: " + " ".join(bad))
    svc_names = {o["metadata"]["name"] for o in docs if o["kind"] == "Service"}
    hosts = set(re.findall(r"(?:proxy_pass\s+https?://|^\s*server\s+|togglemaster_redis\s+)([A-Za-z][\w.-]*)",
                           code, re.M)) - {"localhost"}
    # proxy_pass to an upstream block names the block; its servers are checked
    hosts -= set(re.findall(r"^\s*upstream\s+([\w.-]+)", code, re.M))
    bad = sorted(h for h in hosts if h.split(".")[0] not in svc_names or h.split(".")[0] not in services)
    result(not bad, "ingress.conf reaches hosts that are Services in compose and Kubernetes (%s)"
           % " ".join(sorted(hosts)), "unknown: " + " ".join(bad))


def main():
    cmd = sys.argv[1]
    if cmd == "k8s":
        check_k8s(sys.argv[2], sys.argv[3], sys.argv[4])
    elif cmd == "secrets":
        check_secrets(sys.argv[2])
    elif cmd == "compose":
        check_compose(sys.argv[2])
    elif cmd == "images":
        check_images(sys.argv[2])
    elif cmd == "ingress-conf":
        check_ingress_conf(sys.argv[2], sys.argv[3])
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
