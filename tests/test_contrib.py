"""contrib/: the container image recipe, the Kubernetes manifest and the compose file agree with mailrules.

No container runtime or cluster is needed: the files are read and checked against what the
daemon really accepts (the shard values, the metrics port and paths, the rules file).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from mailrules.daemon.metrics import parse_address
from mailrules.daemon.shard import Shard, parse_shard

CONTRIB = Path(__file__).parents[1] / "contrib"


def _manifest() -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all((CONTRIB / "kubernetes.yaml").read_text()) if d]
    return {d["kind"]: d for d in docs}


def _container() -> dict:
    return _manifest()["StatefulSet"]["spec"]["template"]["spec"]["containers"][0]


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _metrics_port(args: list[str]) -> int:
    return parse_address(args[args.index("--metrics") + 1])[1]


# ---------------------------------------------------------------------- Kubernetes


def test_each_statefulset_pod_serves_the_shard_of_its_ordinal():
    sts = _manifest()["StatefulSet"]
    replicas = sts["spec"]["replicas"]
    env = _env(_container())
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    template = env["MAILRULES_SHARD"]["value"]
    for ordinal in range(replicas):
        pod = f"{sts['metadata']['name']}-{ordinal}"
        assert parse_shard(template.replace("$(POD_NAME)", pod)) == Shard(ordinal, replicas)


def test_the_probes_ask_the_daemons_own_health_on_the_metrics_port():
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == _metrics_port(container["args"])
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_the_pods_run_as_a_user_and_keep_their_state_on_a_volume_of_their_own():
    sts = _manifest()["StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    container = _container()
    state = container["args"][container["args"].index("--state") + 1]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["state"] == state
    assert [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]] == ["state"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_example_rules_load_and_their_passwords_come_from_the_secret(tmp_path):
    from mailrules.config import load

    manifest = _manifest()
    rules = tmp_path / "rules.yaml"
    rules.write_text(manifest["ConfigMap"]["data"]["rules.yaml"])
    config = load(rules)
    secret = manifest["Secret"]
    assert {a.auth.kind for a in config.accounts.values()} == {"password_env"}
    assert {a.auth.value for a in config.accounts.values()} <= set(secret["stringData"])
    assert _container()["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    mounts = {m["name"]: m["mountPath"] for m in _container()["volumeMounts"]}
    volumes = {v["name"]: v for v in manifest["StatefulSet"]["spec"]["template"]["spec"]["volumes"]}
    assert volumes["rules"]["configMap"]["name"] == manifest["ConfigMap"]["metadata"]["name"]
    assert f"{mounts['rules']}/rules.yaml" == _dockerfile_env()["MAILRULES_CONFIG"]


# ---------------------------------------------------------------------- the image


def _dockerfile() -> str:
    return (CONTRIB / "Dockerfile").read_text()


def _dockerfile_env() -> dict[str, str]:
    text = _dockerfile().replace("\\\n", " ")
    out = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            out.update(re.findall(r"(\w+)=(\S+)", line))
    return out


def test_the_image_runs_as_an_unprivileged_user():
    users = re.findall(r"^USER\s+(\S+)", _dockerfile(), re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")


def test_the_image_keeps_its_state_on_a_volume_and_serves_metrics_where_it_checks_health():
    text = _dockerfile()
    cmd = yaml.safe_load(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    state = cmd[cmd.index("--state") + 1]
    assert f'VOLUME ["{state}"]' in text
    port = _metrics_port(cmd)
    assert re.search(rf"^EXPOSE {port}$", text, re.M)
    assert f"127.0.0.1:{port}/healthz" in text
    assert 'pip install ".[metrics]"' in text  # the extra --metrics needs


# ---------------------------------------------------------------------- compose


def test_compose_gives_each_shard_one_service_and_one_state_volume():
    compose = yaml.safe_load((CONTRIB / "compose.yaml").read_text())
    services = compose["services"]
    shards = [parse_shard(s["environment"]["MAILRULES_SHARD"]) for s in services.values()]
    assert sorted(s.index for s in shards) == list(range(len(services)))
    assert {s.count for s in shards} == {len(services)}
    states = [next(v.split(":")[0] for v in s["volumes"] if v.endswith(":/state")) for s in services.values()]
    assert len(set(states)) == len(services)
    assert set(states) <= set(compose["volumes"])


@pytest.mark.parametrize("name", ["Dockerfile", "compose.yaml", "kubernetes.yaml"])
def test_each_contrib_file_says_how_to_use_it(name):
    head = (CONTRIB / name).read_text().splitlines()[:3]
    assert all(line.startswith("#") for line in head)
