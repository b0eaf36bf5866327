"""The generated CRD: current, structural, accepted by Kubernetes' schema, rules intact."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from detinfer import crd
from detinfer.api import constants as c
from detinfer.api.base import KubeModel
from detinfer.api.cel import CelRule
from detinfer.api.spec import EngineSpec
from detinfer.engines.sglang import flags as sglang_flags
from tests.support.factories import ROOT

CRD_PATH = ROOT / "crds" / crd.CRD_FILENAME


@pytest.fixture(scope="module")
def committed() -> dict:
    return yaml.safe_load(CRD_PATH.read_text())


def test_committed_files_are_current():
    """`make crds` output is committed: the CRD and the API reference match the models."""
    assert CRD_PATH.read_text() == crd.render_crd_yaml(), "run `make crds`"
    reference = ROOT / "docs" / "api-reference.md"
    assert reference.read_text() == crd.render_reference_markdown(), "run `make crds`"


def test_passes_kubernetes_validate():
    kubernetes_validate.validate(crd.build_crd(), "1.36.0", strict=True)


def _walk(node, path="$"):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schema_is_structural(committed):
    schema = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    forbidden = {
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "$defs",
        "title",
        "additionalProperties",
        "nullable",
        "const",
    }
    for path, node in _walk(schema):
        assert "type" in node, f"{path} has no type"
        if isinstance(node.get("additionalProperties"), dict):  # a map: its values' schema
            assert node["type"] == "object" and "properties" not in node, path
            assert "maxProperties" in node, f"{path}: CEL cost estimation needs maxProperties"
            assert node["additionalProperties"]["type"] == "string", path
            assert "maxLength" in node["additionalProperties"], path
            continue
        assert not forbidden & set(node), f"{path} uses {forbidden & set(node)}"
        if node["type"] == "object":
            assert "properties" in node, f"{path} is an object without properties"
        if "default" in node and node["type"] == "object":
            assert None not in node["default"].values(), path
        if node["type"] == "string" and "enum" not in node and path.startswith("$.spec"):
            assert "maxLength" in node, f"{path}: CEL cost estimation needs maxLength"
        if node["type"] == "array" and path.startswith("$.spec"):
            assert "maxItems" in node, f"{path}: CEL cost estimation needs maxItems"


def test_names_status_subresource_and_columns(committed):
    spec = committed["spec"]
    assert committed["metadata"]["name"] == "deterministicinferenceservices.detinfer.io"
    assert spec["names"]["shortNames"] == ["dis"]
    assert spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["storage"] and version["served"]
    assert version["subresources"] == {"status": {}}
    columns = {col["name"]: col["jsonPath"] for col in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Validated"] == '.status.conditions[?(@.type=="Validated")].status'
    assert columns["Unique"] == ".status.validation.uniqueOutputs"
    assert columns["Fingerprint"] == ".status.shortFingerprint"
    assert columns["Serving"] == ".status.replicas.validated"
    assert columns["Replicas"] == ".spec.replicas"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_conditions_are_a_map_list_keyed_by_type(committed):
    status = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert set(conditions["items"]["required"]) == {
        "type",
        "status",
        "reason",
        "lastTransitionTime",
    }
    assert conditions["items"]["properties"]["status"]["enum"] == ["True", "False", "Unknown"]


def test_every_model_rule_is_in_the_crd_once(committed):
    text = yaml.safe_dump(committed)
    schema = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    in_crd = [
        r["rule"] for _, node in _walk(schema) for r in node.get("x-kubernetes-validations", [])
    ]
    declared = [rule.rule for rule in _declared_rules()]
    assert sorted(in_crd) == sorted(declared)
    assert "self.metadata" not in text


def test_metadata_restricts_only_the_name(committed):
    schema = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    metadata = schema["properties"]["metadata"]
    assert set(metadata["properties"]) == {"name"}
    assert metadata["properties"]["name"]["maxLength"] == 52


def _declared_rules() -> list[CelRule]:
    def subclasses(base):
        for sub in base.__subclasses__():
            yield sub
            yield from subclasses(sub)

    models = set(subclasses(KubeModel))
    return [r for m in models for r in m.cel_rules] + [
        r for m in models for rules in getattr(m, "item_cel_rules", {}).values() for r in rules
    ]


def test_extra_args_item_rules_are_at_the_items_node(committed):
    spec = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    items = spec["properties"]["engine"]["properties"]["extraArgs"]["items"]
    assert [r["rule"] for r in items["x-kubernetes-validations"]] == [
        r.rule for r in EngineSpec.item_cel_rules["extra_args"]
    ]
    assert all(r["reason"] == "FieldValueForbidden" for r in items["x-kubernetes-validations"])


def test_spec_defaults_match_the_models(committed):
    spec = committed["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    engine = spec["properties"]["engine"]["properties"]
    assert engine["attentionBackend"]["enum"] == [
        "FA3",
        "FA4",
        "FlashInfer",
        "Triton",
        "Tiled",
        "Tree",
        "SplitKV",
        "FlashAttn",
        "TritonAttn",
        "FlashAttnMLA",
        "TritonMLA",
        "Auto",
    ]
    assert engine["attentionBackend"]["default"] == "FA3"
    assert engine["version"]["enum"] == list(sglang_flags.VERSIONS)
    assert "default" not in engine["version"]
    numerics = engine["numerics"]["properties"]
    assert numerics["flashinferPrefillSplitTileSize"]["default"] == 4096
    assert numerics["ncclChannels"]["default"] == 8
    assert numerics["matmulDeepGemm"]["enum"] == ["Enabled", "Disabled"]
    assert engine["tensorParallelSize"]["minimum"] == 1
    assert spec["properties"]["replicas"]["minimum"] == 0
    validation = spec["properties"]["validation"]["properties"]
    assert validation["suites"]["x-kubernetes-list-type"] == "set"
    assert (validation["trials"]["minimum"], validation["trials"]["maximum"]) == (1, 128)
    assert spec["required"] == ["model", "engine"]


def test_crds_check_detects_a_stale_file(tmp_path: Path):
    from detinfer.cli import main

    assert main(["crds", "--root", str(tmp_path)]) == 0
    assert main(["crds", "--root", str(tmp_path), "--check"]) == 0
    path = tmp_path / "crds" / crd.CRD_FILENAME
    path.write_text(path.read_text().replace("maxItems: 64", "maxItems: 65"))
    assert main(["crds", "--root", str(tmp_path), "--check"]) == 1
    assert c.PLURAL in path.read_text()


def test_a_rule_with_a_reason_the_api_server_refuses_cannot_be_declared():
    """The API server refuses a CRD whose rule names another reason (a draft of the VLLM
    backend rule said FieldValueNotSupported, and `helm install` failed on it)."""
    from detinfer.api.cel import CelRule

    with pytest.raises(ValueError, match="FieldValueNotSupported"):
        CelRule(rule="true", message="m", reason="FieldValueNotSupported")
    assert CelRule(rule="true", message="m", reason="FieldValueForbidden").reason
