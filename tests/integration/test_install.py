"""The chart on a real API server: what its ServiceAccount may do, `helm upgrade`, `helm uninstall`.

The session's operator is the chart's (conftest), run by the pod runner under its ServiceAccount.
These tests change that release (upgrade, uninstall, install again) and leave it installed and
serving as they found it.
"""

from __future__ import annotations

import re
import urllib.request
import uuid
from typing import Any

import yaml

from tests.support import factories as f
from tests.support.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    SERVICE_ACCOUNT,
    InstalledOperator,
    forbidden,
    helm,
    local_values,
)
from tests.support.cluster import Cluster, free_port, wait_for

NAME = "qwen3-8b"  # examples' service.yaml
SA_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
CAN_I_ROW = re.compile(r"^(\S*)\s*\[([^\]]*)\]\s+\[([^\]]*)\]\s+\[([^\]]*)\]\s*$")


def can_i(cluster: Cluster, user: str, namespace: str | None = None) -> set[tuple[str, str]]:
    """`kubectl auth can-i --list` as `user`: (resource.group[/subresource] or URL, verb)."""
    args = ["auth", "can-i", "--list", f"--as={user}"]
    if namespace:
        args += ["-n", namespace]
    out = cluster.kubectl(*args).stdout.splitlines()
    assert out and out[0].split()[0] == "Resources", out[:1]
    allowed = set()
    for line in out[1:]:
        match = CAN_I_ROW.match(line)
        assert match, f"unexpected line of kubectl auth can-i --list: {line!r}"
        resource, urls, names, verbs = match.groups()
        assert not names, f"a rule limited to resource names: {line!r}"
        for verb in verbs.split():
            allowed.add((resource or urls, verb))
    return allowed


def granted_by_chart(rules: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """The chart's rules in can-i's spelling: resources.group, subresources after a slash."""
    granted = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                base, _, sub = resource.partition("/")
                name = f"{base}.{group}" if group else base
                for verb in rule["verbs"]:
                    granted.add((f"{name}/{sub}" if sub else name, verb))
    return granted


def manifest(cluster: Cluster, release: str, namespace: str) -> list[dict[str, Any]]:
    text = helm(cluster, "get", "manifest", release, "--namespace", namespace).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def example() -> dict[str, Any]:
    body = f.example("service.yaml")
    body["spec"]["replicas"] = 1
    return body


def nobody(namespace: str) -> str:
    """A ServiceAccount no binding names: what every authenticated user may do."""
    return f"system:serviceaccount:{namespace}:nobody-{uuid.uuid4().hex[:6]}"


def test_a_request_rbac_refuses_is_caught_by_the_audit_check(
    cluster: Cluster, operator: InstalledOperator, tmp_path
):
    """The check every session ends with (forbidden(): the chart's ServiceAccount was refused
    nothing) can fail: a ServiceAccount no binding names, with a real token, is refused a list of
    Jobs, and the audit log shows that refusal under its name."""
    account = f"nobody-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "serviceaccount", account, "-n", NAMESPACE)
    try:
        token = cluster.kubectl("create", "token", account, "-n", NAMESPACE).stdout.strip()
        admin = yaml.safe_load(cluster.kubeconfig.read_text())
        kubeconfig = tmp_path / "nobody.kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": admin["clusters"],
                    "users": [{"name": account, "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": account,
                            "context": {"cluster": admin["clusters"][0]["name"], "user": account},
                        }
                    ],
                    "current-context": account,
                }
            )
        )
        result = Cluster(cluster.name, kubeconfig).kubectl(
            "get", "jobs", "-n", NAMESPACE, check=False
        )
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), result.stderr
        user = f"system:serviceaccount:{NAMESPACE}:{account}"
        refused = wait_for("the refusal in the audit log", lambda: forbidden(cluster, user))
        assert refused == [f"list jobs in {NAMESPACE}"]
    finally:
        cluster.kubectl("delete", "serviceaccount", account, "-n", NAMESPACE, check=False)


def test_the_operator_calls_the_api_as_its_service_account(
    cluster: Cluster, operator: InstalledOperator
):
    def with_dis_watch() -> list:
        # A watch reaches the audit log when the API server writes its event, which can be a
        # while after the operator's first lists: wait for it rather than read once.
        found = cluster.operator_requests()
        return (
            found
            if any(
                e["verb"] == "watch"
                and (e.get("objectRef") or {}).get("resource") == "deterministicinferenceservices"
                for e in found
            )
            else []
        )

    requests = wait_for("the operator's watch of its resources", with_dis_watch, timeout=120)
    users = {e["user"]["username"] for e in requests}
    # This release's ServiceAccount (and a namespaced release's, on a kept cluster): never the
    # kubeconfig's administrator.
    assert SA_USER in users and all(u.startswith("system:serviceaccount:") for u in users), users
    verbs = {(e["verb"], (e.get("objectRef") or {}).get("resource")) for e in requests}
    assert ("watch", "deterministicinferenceservices") in verbs, verbs
    assert operator.log_path.exists()


def test_can_i_list_is_exactly_the_cluster_role(cluster: Cluster, operator: InstalledOperator):
    roles = [d for d in manifest(cluster, RELEASE, NAMESPACE) if d["kind"] == "ClusterRole"]
    assert len(roles) == 1, [r["metadata"]["name"] for r in roles]
    expected = granted_by_chart(roles[0]["rules"])
    base = can_i(cluster, nobody(NAMESPACE))
    assert ("selfsubjectaccessreviews.authorization.k8s.io", "create") in base
    for namespace in ("default", "kube-system"):  # a ClusterRole: the same in every namespace
        assert can_i(cluster, SA_USER, namespace) - base == expected, namespace
    assert ("secrets", "get") not in can_i(cluster, SA_USER)


def test_namespaced_mode_can_i_list(cluster: Cluster, operator: InstalledOperator, namespace: str):
    """A second release in namespaced mode: Roles in the watched namespace only; its operator,
    run by the pod runner under its own ServiceAccount, serves and is refused nothing."""
    release, home = "team", f"team-{uuid.uuid4().hex[:6]}"
    user = f"system:serviceaccount:{home}:{release}-detinfer"
    liveness = free_port()
    helm(
        cluster,
        "install",
        release,
        str(CHART),
        "--namespace",
        home,
        "--create-namespace",
        "--set",
        f"watchNamespaces={{{namespace}}}",
        *local_values(free_port(), liveness),
        "--wait",
        "--timeout",
        "120s",
    )
    try:
        docs = manifest(cluster, release, home)
        assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
        (role,) = [d for d in docs if d["kind"] == "Role"]
        assert role["metadata"]["namespace"] == namespace
        base = can_i(cluster, nobody(home), namespace)
        assert can_i(cluster, user, namespace) - base == granted_by_chart(role["rules"])
        assert can_i(cluster, user, "default") - can_i(cluster, nobody(home), "default") == set()
        # helm --wait can return on kwok's own Ready, before the pod runner has started the
        # operator (a CI run read the container unready then): wait until its /healthz answers.
        (pod,) = cluster.core.list_namespaced_pod(home).items
        wait_for(
            "the namespaced operator's /healthz",
            lambda: _answers(f"http://{pod.status.pod_ip}:{liveness}/healthz"),
            timeout=90,
        )
        (pod,) = cluster.core.list_namespaced_pod(home).items
        assert pod.status.container_statuses[0].ready
        assert forbidden(cluster, user) == []
    finally:
        helm(cluster, "uninstall", release, "--namespace", home, "--wait")
        cluster.kubectl("delete", "namespace", home, "--wait=false", check=False)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_helm_upgrade_with_new_values_rolls_the_operator(
    cluster: Cluster, operator: InstalledOperator
):
    before = operator.pod()
    assert before is not None
    pid = operator.pid()
    try:
        operator.install(
            "--set", "verbose=true", "--set", "resources.requests.cpu=150m", command="upgrade"
        )
        after = operator.pod()
        assert after is not None and after.metadata.uid != before.metadata.uid
        container = after.spec.containers[0]
        assert "--verbose" in container.args
        assert container.resources.requests["cpu"] == "150m"
        assert operator.pid() != pid
        assert " DEBUG " in operator.log_path.read_text(), "the new pod logs at debug level"
        wait_for(
            "the old pod gone",
            lambda: (
                cluster.kubectl(
                    "get", "pod", before.metadata.name, "-n", NAMESPACE, check=False
                ).returncode
                != 0
            ),
        )
    finally:
        operator.install("--set", "verbose=false", command="upgrade")
    assert "--verbose" not in operator.pod().spec.containers[0].args


def test_helm_uninstall_keeps_the_crd_and_the_resources(
    cluster: Cluster, operator: InstalledOperator, namespace: str
):
    cluster.apply(namespace, example())
    wait_for(
        "the operator's Deployment for the resource",
        lambda: (
            cluster.kubectl("get", "deployment", NAME, "-n", namespace, check=False).returncode == 0
        ),
    )
    try:
        operator.uninstall()
        leftovers = cluster.kubectl(
            "get",
            "deployment,serviceaccount,service,role,rolebinding",
            "-n",
            NAMESPACE,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "name",
        ).stdout.split()
        assert leftovers == []
        cluster_wide = cluster.kubectl(
            "get",
            "clusterrole,clusterrolebinding",
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "name",
        ).stdout.split()
        assert cluster_wide == []
        wait_for("the operator's pod gone", lambda: operator.pod() is None)
        cluster.kubectl("get", "crd", "deterministicinferenceservices.detinfer.io")
        assert cluster.dis(namespace, NAME)["metadata"]["name"] == NAME
        assert (
            cluster.kubectl("get", "deployment", NAME, "-n", namespace, check=False).returncode == 0
        )
    finally:
        operator.install()
    # Installed again, it takes the resource up where it was.
    wait_for(
        "status.revision after the reinstall",
        lambda: cluster.dis(namespace, NAME).get("status", {}).get("revision"),
    )
