"""charts/detinfer through the real helm binary (hack/build-binaries.sh builds it): lint, templates
validated offline against Kubernetes 1.36's schemas, the values schema refusing bad values, and
the RBAC rules compared with the API calls the operator's code makes.

No cluster: installing, upgrading and running the operator under the chart's ServiceAccount are
the integration tests' job.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from detinfer import __version__
from detinfer.api import constants as c

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "detinfer"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSION = "1.36.0"
HELM = Path(
    os.environ.get("HELM", Path.home() / ".cache" / "detinfer" / "bin" / "current" / "helm")
)
RELEASE, NAMESPACE = "detinfer", "detinfer-system"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="session", autouse=True)
def helm_exists() -> None:
    # A missing helm fails (never skips): `make chart` builds it first.
    assert HELM.is_file(), f"{HELM} is missing: run hack/build-binaries.sh helm (make chart does)"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=120)


def template(*args: str) -> subprocess.CompletedProcess[str]:
    return helm(
        "template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", KUBE_VERSION, *args
    )


def test_helm_knows_the_kubernetes_version_it_was_built_against(tmp_path: Path):
    """hack/build-binaries.sh stamps the Kubernetes version of helm's client-go in, as Helm's
    release builds do; a helm built without it takes every cluster for v1.20.0, and the
    chart's `kubeVersion: >=1.30` refuses to render without --kube-version."""
    result = helm("template", RELEASE, str(CHART), "-n", NAMESPACE)
    assert result.returncode == 0, result.stderr
    probe = tmp_path / "probe"
    (probe / "templates").mkdir(parents=True)
    (probe / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (probe / "templates" / "v.yaml").write_text(
        "# {{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}\n"
    )
    result = helm("template", str(probe))
    assert result.returncode == 0, result.stderr
    major, minor = KUBE_VERSION.split(".")[:2]
    assert f"# {major}.{minor}" in result.stdout, result.stdout


def render(*args: str) -> list[dict[str, Any]]:
    result = template(*args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """Offline, against Kubernetes' own schemas, as `make verify` checks the CRD."""
    tool = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run(
        [str(tool), "--strict", "--quiet", "-k", KUBE_VERSION, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_strict():
    result = helm("lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION)
    assert result.returncode == 0, result.stdout + result.stderr
    for values in CI_VALUES:
        result = helm(
            "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "-f", str(values)
        )
        assert result.returncode == 0, f"{values.name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda v: v.name if v else "defaults")
def test_templates_are_valid_kubernetes_objects(values: Path | None, tmp_path: Path):
    result = template(*(["-f", str(values)] if values else []))
    assert result.returncode == 0, result.stderr
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(result.stdout)
    check = kubernetes_validate(rendered)
    assert check.returncode == 0, check.stdout + check.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert {"Deployment", "Service"} <= kinds


def test_kubernetes_validate_refuses_what_it_should(tmp_path: Path):
    """The check above can fail: a Deployment with an unknown field is refused."""
    deployment = of_kind(render(), "Deployment")[0]
    deployment["spec"]["replica"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    check = kubernetes_validate(bad)
    assert check.returncode != 0


# ---- the values schema: one test per kind of mistake, through helm itself ----


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # a tag where a digest is required
        (["--set", "image.digest=0.1.0"], "at '/image/digest'"),
        (["--set", "image.repository=detinfer-operator:0.1.0"], "at '/image/repository'"),
        # a validator repository without its digest
        (["--set", "validatorImage.repository=r/validator"], "at '/validatorImage"),
        # wrong types
        (["--set-string", "metricsPort=8080"], "at '/metricsPort': got string, want integer"),
        (["--set", "serviceAccount.create=maybe"], "at '/serviceAccount/create'"),
        (["--set", "watchNamespaces=team-a"], "at '/watchNamespaces'"),
        # out of range, not a name, not a quantity
        (["--set", "metricsPort=70000"], "at '/metricsPort'"),
        (["--set", "watchNamespaces[0]=Team_A"], "at '/watchNamespaces/0'"),
        (["--set", "resources.limits.memory=lots"], "at '/resources/limits/memory'"),
        (["--set", "image.pullPolicy=Sometimes"], "at '/image/pullPolicy'"),
        # unknown keys, at the top and nested
        (["--set", "replicaCount=2"], "additional properties 'replicaCount' not allowed"),
        (["--set", "serviceAccount.nmae=x"], "additional properties 'nmae' not allowed"),
        (["--set", "imagePullSecrets[0].nam=x"], "additional properties 'nam' not allowed"),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_schema_refuses_bad_values(args: list[str], message: str):
    result = template(*args)
    assert result.returncode != 0, f"{args} was accepted"
    assert "don't meet the specifications of the schema" in result.stderr, result.stderr
    assert message in result.stderr, result.stderr


def test_schema_accepts_a_digest_and_a_validator_image():
    docs = render(
        "--set",
        f"image.repository=reg:5000/op,image.digest={DIGEST}",
        "--set",
        f"validatorImage.repository=reg:5000/val,validatorImage.digest={DIGEST}",
    )
    container = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"reg:5000/op@{DIGEST}"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DETINFER_VALIDATOR_IMAGE"] == f"reg:5000/val@{DIGEST}"


# ---- the Deployment ----


def test_operator_deployment():
    docs = render("--set", f"image.digest={DIGEST}")
    deployment = of_kind(docs, "Deployment")[0]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == of_kind(docs, "ServiceAccount")[0]["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "liveness": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "liveness"}
    assert container["args"] == [
        "run",
        "--metrics-port=8080",
        "--liveness-port=8081",
        "--no-scanning",
    ]
    # The validator image defaults to the operator's own, by digest.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["image"] == f"detinfer-operator@{DIGEST}"
    assert env["DETINFER_VALIDATOR_IMAGE"] == container["image"]
    # The settings' environment variables are the ones the operator reads.
    from detinfer.config import OperatorConfig

    config = OperatorConfig.from_env(env)
    assert config.validator_image == container["image"]
    assert set(env) == {
        "DETINFER_VALIDATOR_IMAGE",
        "DETINFER_JOB_TTL_SECONDS",
        "DETINFER_RETRY_AFTER_SECONDS",
        "DETINFER_GATHER_SECONDS",
        "DETINFER_MONITORING_NAMESPACE",
    }
    # The metrics Service selects the operator's pod, on its metrics port.
    (service,) = of_kind(docs, "Service")
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_every_object_carries_the_common_labels():
    for doc in render("-f", str(CHART / "ci" / "namespaced-values.yaml")):
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "detinfer", doc["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == __version__
        # The operator watches objects labelled part-of=detinfer: never its own.
        assert c.LABEL_PART_OF not in labels, doc["kind"]
        template = doc.get("spec", {}).get("template", {}).get("metadata", {})
        assert c.LABEL_PART_OF not in template.get("labels", {}), doc["kind"]


def test_existing_service_account():
    docs = render("--set", "serviceAccount.create=false,serviceAccount.name=ops-sa")
    assert not of_kind(docs, "ServiceAccount")
    assert of_kind(docs, "ClusterRoleBinding")[0]["subjects"][0]["name"] == "ops-sa"
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops-sa"


# ---- RBAC ----

# (apiGroup, resource, verb): what the operator may do, written out here on purpose.
EXPECTED_RULES = {
    ("detinfer.io", "deterministicinferenceservices", "get"),
    ("detinfer.io", "deterministicinferenceservices", "list"),
    ("detinfer.io", "deterministicinferenceservices", "watch"),
    ("detinfer.io", "deterministicinferenceservices/status", "patch"),
    ("detinfer.io", "deterministicinferenceservices/finalizers", "update"),
    ("apps", "deployments", "create"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "patch"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
    ("apps", "deployments", "delete"),
    ("", "services", "create"),
    ("", "services", "get"),
    ("", "services", "patch"),
    ("", "services", "list"),
    ("", "services", "watch"),
    ("networking.k8s.io", "networkpolicies", "create"),
    ("networking.k8s.io", "networkpolicies", "get"),
    ("networking.k8s.io", "networkpolicies", "patch"),
    ("networking.k8s.io", "networkpolicies", "list"),
    ("networking.k8s.io", "networkpolicies", "watch"),
    ("networking.k8s.io", "networkpolicies", "delete"),
    ("apps", "replicasets", "list"),
    ("apps", "replicasets", "watch"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "get"),
    ("batch", "jobs", "delete"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "watch"),
    ("", "pods", "list"),
    ("", "pods", "watch"),
    ("", "pods/status", "patch"),
    ("events.k8s.io", "events", "create"),
}
# Granted though the code never calls it: the OwnerReferencesPermissionEnforcement admission
# plugin requires it to create children whose ownerReference sets blockOwnerDeletion.
ADMISSION_ONLY = {("detinfer.io", "deterministicinferenceservices/finalizers", "update")}


def flatten(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    out = set()
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def test_cluster_role_grants_exactly_the_expected_rules():
    docs = render()
    (role,) = of_kind(docs, "ClusterRole")
    granted = flatten(role["rules"])
    assert granted == EXPECTED_RULES
    assert not any("*" in part for rule in granted for part in rule)
    assert not any(resource == "secrets" for _, resource, _ in granted)
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "detinfer", "namespace": NAMESPACE}
    ]
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")


def test_namespaced_mode_grants_roles_in_the_watched_namespaces_only():
    docs = render("-f", str(CHART / "ci" / "namespaced-values.yaml"))
    assert not of_kind(docs, "ClusterRole") and not of_kind(docs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r for r in of_kind(docs, "Role")}
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(docs, "RoleBinding")}
    assert set(roles) == set(bindings) == {"team-a", "team-b"}
    for namespace, role in roles.items():
        assert flatten(role["rules"]) == EXPECTED_RULES
        assert bindings[namespace]["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": role["metadata"]["name"],
        }
        assert bindings[namespace]["subjects"][0]["namespace"] == NAMESPACE
    args = of_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]


# ---- the RBAC rules against the code ----

CONTROLLER = ROOT / "operator" / "detinfer" / "controller"
# The kubernetes client's API objects (controller/cluster.py) and their API groups.
API_GROUPS = {
    "core": "",
    "apps": "apps",
    "batch": "batch",
    "networking": "networking.k8s.io",
    "events": "events.k8s.io",
    "custom": c.GROUP,
}
VERBS = {"create": "create", "read": "get", "get": "get", "patch": "patch", "delete": "delete"}
VERBS |= {"list": "list", "replace": "update"}
METHOD = re.compile(r"^(create|read|get|patch|delete|list|replace)_namespaced_(\w+)$")
# Resources of the methods' suffixes; custom objects are only ever the DIS (cluster.py).
RESOURCES = {
    "deployment": "deployments",
    "service": "services",
    "job": "jobs",
    "pod": "pods",
    "pod_status": "pods/status",
    "replica_set": "replicasets",
    "network_policy": "networkpolicies",
    "event": "events",
    "custom_object": c.PLURAL,
    "custom_object_status": f"{c.PLURAL}/status",
}


def client_calls() -> dict[tuple[str, str, str], list[str]]:
    """Every kubernetes client method the controller names, as (group, resource, verb)."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for path in sorted(CONTROLLER.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not (match := METHOD.match(node.attr)):
                continue
            api = node.value.attr if isinstance(node.value, ast.Attribute) else None
            assert api in API_GROUPS, f"{path.name}:{node.lineno}: {node.attr} on {api}"
            assert match.group(2) in RESOURCES, f"{path.name}:{node.lineno}: {node.attr}"
            key = (API_GROUPS[api], RESOURCES[match.group(2)], VERBS[match.group(1)])
            found.setdefault(key, []).append(f"{path.name}:{node.lineno}")
    return found


def kopf_watches() -> dict[tuple[str, str, str], list[str]]:
    """Every resource kopf watches for the controller (indexes and event handlers): list+watch."""
    handlers = CONTROLLER / "handlers.py"
    tree = ast.parse(handlers.read_text())
    found: dict[tuple[str, str, str], list[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        if not name.startswith("kopf.") or name in {"kopf.on.startup", "kopf.on.cleanup"}:
            continue
        # Change handlers (on.create/update/...) and daemons make kopf patch the resource
        # (annotations, finalizers): RBAC the chart does not grant.
        assert name in {"kopf.index", "kopf.on.event"}, f"handlers.py:{node.lineno}: {name}"
        if any(isinstance(a, ast.Starred) for a in node.args):
            group, resource = c.GROUP, c.PLURAL  # *DIS
        else:
            parts = [ast.literal_eval(a) for a in node.args]
            group, resource = ("", parts[1]) if parts[0] == "v1" else (parts[0], parts[2])
        for verb in ("list", "watch"):
            found.setdefault((group, resource, verb), []).append(f"handlers.py:{node.lineno}")
    return found


def child_watches() -> dict[tuple[str, str, str], list[str]]:
    """Every kind the controller's own child watches list (controller/watches.py): list+watch,
    as the same list call opens the watch."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for (group, resource, verb), sites in client_calls().items():
        in_watches = [site for site in sites if site.startswith("watches.py:")]
        if verb == "list" and in_watches:
            for verb in ("list", "watch"):
                found.setdefault((group, resource, verb), []).extend(in_watches)
    return found


def test_the_code_calls_exactly_what_rbac_grants():
    used = {**client_calls()}
    for key, sites in [*kopf_watches().items(), *child_watches().items()]:
        used.setdefault(key, []).extend(sites)
    missing = set(used) - EXPECTED_RULES
    assert not missing, {k: used[k] for k in missing}
    unused = EXPECTED_RULES - set(used) - ADMISSION_ONLY
    assert not unused, f"granted but never called: {unused}"


def test_the_call_scan_finds_calls():
    """The scan cannot pass by finding nothing: it sees the Job create, the pod watch (the
    controller's own) and the resources' watch (kopf's)."""
    assert ("batch", "jobs", "create") in client_calls()
    assert ("", "pods", "watch") in child_watches()
    assert (c.GROUP, c.PLURAL, "watch") in kopf_watches()


def notes(tmp_path: Path, *args: str) -> str:
    """NOTES.txt as `helm install` prints it. helm template leaves it out, so a copy of the chart
    renders it as a named template inside an ordinary one."""
    import shutil

    copy = tmp_path / "detinfer"
    shutil.copytree(CHART, copy)
    text = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "NOTES.txt").unlink()
    (copy / "templates" / "_notes.tpl").write_text('{{- define "notes" -}}' + text + "{{- end -}}")
    (copy / "templates" / "notes.yaml").write_text('notes: {{ include "notes" . | toJson }}\n')
    result = helm(
        "template", RELEASE, str(copy), "-n", NAMESPACE, "--kube-version", KUBE_VERSION,
        "--show-only", "templates/notes.yaml", *args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["notes"]


def test_notes_say_what_to_do_next(tmp_path: Path):
    placeholder = notes(tmp_path / "a")
    assert "WARNING: image.digest is the chart's placeholder" in placeholder
    assert "It watches all namespaces." in placeholder
    assert f"rollout status deployment/{RELEASE}" in placeholder
    assert "kubectl get dis -A -w" in placeholder
    pinned = notes(
        tmp_path / "b", "--set", f"image.digest={DIGEST}", "--set", "watchNamespaces={a,b}"
    )
    assert "WARNING" not in pinned
    assert "It watches the namespaces a, b only." in pinned


# ---- NetworkPolicies (issue #27) ----


def test_no_operator_network_policy_unless_asked():
    assert of_kind(render(), "NetworkPolicy") == []
    env = of_kind(render(), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "DETINFER_MONITORING_NAMESPACE", "value": ""} in env


def test_operator_network_policy_admits_the_monitoring_namespace_to_metrics_only():
    docs = render(
        "--set", "networkPolicy.operator=true", "--set", "networkPolicy.monitoringNamespace=mon"
    )
    (policy,) = of_kind(docs, "NetworkPolicy")
    pod = of_kind(docs, "Deployment")[0]["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}
            ],
            "ports": [{"protocol": "TCP", "port": 8080}],
        }
    ]
    env = pod["spec"]["containers"][0]["env"]
    assert {"name": "DETINFER_MONITORING_NAMESPACE", "value": "mon"} in env
    # Without a monitoring namespace nothing may come in.
    (closed,) = of_kind(render("--set", "networkPolicy.operator=true"), "NetworkPolicy")
    assert closed["spec"]["ingress"] == []


def test_schema_refuses_a_monitoring_namespace_that_is_no_name():
    result = template("--set", "networkPolicy.monitoringNamespace=Mon_1")
    assert result.returncode != 0 and "at '/networkPolicy/monitoringNamespace'" in result.stderr
