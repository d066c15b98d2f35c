"""deploy/k8s validated offline against the Kubernetes 1.32 OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors), and checked for what the schemas
cannot see: the objects refer to each other by the right names, labels, ports and files,
and the command lines in them are ones netdiag accepts.

ServiceMonitor is a CRD (Prometheus Operator) and Kustomization is not an API object, so the
schema validator has no schema for them (SchemaNotFoundError); their fields are checked here
by hand against the objects they select.
"""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from netdiag.exporter import config as exporter_config

kv = pytest.importorskip(
    "kubernetes_validate", reason="needs kubernetes-validate (dev dependency): run `make setup`"
)
yaml = pytest.importorskip("yaml", reason="needs PyYAML (kubernetes-validate's dependency)")

K8S_VERSION = "1.32.0"  # pinned: the schemas these manifests are held to
K8S_DIR = Path(__file__).resolve().parents[3] / "deploy" / "k8s"
NETDIAG = str(Path(sys.executable).parent / "netdiag")
NO_SCHEMA = {"ServiceMonitor", "Kustomization"}


def docs() -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for f in sorted(K8S_DIR.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                out.append((f, d))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _f, d in docs() if d["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    (d,) = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    return d


def test_every_api_object_validates_strictly() -> None:
    checked = 0
    for f, d in docs():
        if d["kind"] in NO_SCHEMA:
            with pytest.raises(kv.SchemaNotFoundError):
                kv.validate(d, K8S_VERSION, True)
            continue
        try:
            kv.validate(d, K8S_VERSION, True)
        except kv.ValidationError as e:
            pytest.fail(f"{f.name} ({d['kind']}): {e.message}")
        checked += 1
    assert checked >= 6


def test_the_validator_rejects_a_broken_object() -> None:
    sts = copy.deepcopy(one("StatefulSet", "netdiag-node"))
    sts["spec"]["replicas"] = "four"
    with pytest.raises(kv.ValidationError):
        kv.validate(sts, K8S_VERSION, True)
    sts = copy.deepcopy(one("StatefulSet", "netdiag-node"))
    sts["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    with pytest.raises(kv.ValidationError):
        kv.validate(sts, K8S_VERSION, True)


def test_kustomization_lists_every_manifest() -> None:
    (k,) = by_kind("Kustomization")
    files = {f.name for f in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(k["resources"]) == files
    assert [i["name"] for i in k["images"]] == ["netdiag"]
    namespaced = [d for _f, d in docs() if d["kind"] not in ("Namespace", "Kustomization")]
    assert {d["metadata"]["namespace"] for d in namespaced} == {k["namespace"]}


def _labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def _port(container: dict[str, Any], name: str) -> int:
    (p,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(p)


def test_exporter_daemonset_is_wired_to_its_config_service_and_monitor() -> None:
    ds = one("DaemonSet", "netdiag-exporter")
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    c = _container(ds)
    assert spec["hostNetwork"] and spec["hostPID"] and c["securityContext"]["privileged"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/sys/kernel/tracing", "/sys/fs/bpf", "/sys/fs/cgroup"} <= mounts
    metrics = _port(c, "metrics")
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics)
    # the config the pod mounts parses, and listens where the pod's port is
    (cfg_vol,) = [v for v in spec["volumes"] if "configMap" in v]
    cm = one("ConfigMap", cfg_vol["configMap"]["name"])
    assert c["args"][:3] == ["exporter", "--config", "/etc/netdiag/exporter.toml"]
    svc = one("Service", "netdiag-exporter")
    assert _labels_match(svc["spec"]["selector"], pod["metadata"]["labels"])
    (sp,) = svc["spec"]["ports"]
    assert sp["targetPort"] == "metrics" and sp["port"] == metrics
    sm = one("ServiceMonitor", "netdiag-exporter")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert _labels_match(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [sp["name"]]
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    assert cm["data"]["exporter.toml"]


def test_exporter_config_in_the_configmap_is_valid(tmp_path: Path) -> None:
    cm = one("ConfigMap", "netdiag-exporter")
    f = tmp_path / "exporter.toml"
    f.write_text(cm["data"]["exporter.toml"])
    cfg = exporter_config.load(f, {})
    c = _container(one("DaemonSet", "netdiag-exporter"))
    assert cfg.listen.endswith(f":{_port(c, 'metrics')}")
    node = _container(one("StatefulSet", "netdiag-node"))
    assert _port(node, "p2p") in cfg.ports


def test_node_statefulset_finds_peers_through_its_headless_service() -> None:
    sts = one("StatefulSet", "netdiag-node")
    svc = one("Service", sts["spec"]["serviceName"])
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
    pod = sts["spec"]["template"]
    assert _labels_match(svc["spec"]["selector"], pod["metadata"]["labels"])
    c = _container(sts)
    script = c["args"][0]
    p2p = _port(c, "p2p")
    assert f'--peer-dns "{svc["metadata"]["name"]}.${{POD_NAMESPACE}}.svc.cluster.local:{p2p}"' in (
        script
    )
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"p2p", "api"}
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"]


def test_node_command_line_is_one_netdiag_accepts() -> None:
    """The pod's shell script, with its variables set as Kubernetes would, parses as
    `netdiag node run` options (--help exits 0 only if every option exists)."""
    c = _container(one("StatefulSet", "netdiag-node"))
    script = c["args"][0].replace("\\\n", " ")
    (line,) = [ln for ln in script.splitlines() if ln.strip().startswith("exec netdiag")]
    line = line.replace("${POD_NAMESPACE}", "netdiag").replace('"$@"', "--key /k")
    argv = shlex.split(line)[2:]  # drop `exec netdiag`
    p = subprocess.run([NETDIAG, *argv, "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    # and the same options with a real value check: peer-dns must be NAME:PORT
    p = subprocess.run(
        [
            *(NETDIAG, "node", "run", "--data-dir", "/nonexistent", "--genesis", "/nonexistent"),
            *("--peer-dns", "netdiag-node.netdiag.svc.cluster.local"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "not HOST:PORT" in p.stderr


def test_bench_job_targets_every_pod_of_the_node_statefulset(tmp_path: Path) -> None:
    """The Job's target file parses, lists exactly the StatefulSet's pods by their stable DNS
    names under its headless Service at the API port, and needs no privileges."""
    from netdiag.bench.p2p_target import load_target
    from netdiag.nodeapi import parse_address

    job = one("Job", "netdiag-bench-p2p")
    c = _container(job)
    args = c["args"]
    assert args[:3] == ["bench", "p2p", "--target"]
    (vol,) = [v for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    cm = one("ConfigMap", vol["configMap"]["name"])
    target_path = Path(args[3])
    assert str(target_path.parent) == mount["mountPath"] and target_path.name in cm["data"]
    f = tmp_path / target_path.name
    f.write_text(cm["data"][target_path.name])
    nodes = load_target(f)
    sts = one("StatefulSet", "netdiag-node")
    svc = sts["spec"]["serviceName"]
    api = _port(_container(sts), "api")
    name = sts["metadata"]["name"]
    want = [(f"{name}-{i}.{svc}", api) for i in range(sts["spec"]["replicas"])]
    assert [parse_address(n.api) for n in nodes] == want
    assert all(n.netns is None for n in nodes)  # so the pod needs no CAP_SYS_ADMIN
    spec = job["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] and spec["restartPolicy"] == "Never"
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    out = Path(args[args.index("--out") + 1])
    assert any(m["mountPath"] == str(out.parent) for m in c["volumeMounts"])


def test_bench_job_command_line_is_one_netdiag_accepts() -> None:
    c = _container(one("Job", "netdiag-bench-p2p"))
    p = subprocess.run([NETDIAG, *c["args"], "--help"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
