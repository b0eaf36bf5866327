"""The chart's values definition (detinfer.chart) and what is generated from it."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

from detinfer import __version__, chart, crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / chart.CHART_DIR


def test_chart_version_follows_the_package():
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["version"] == __version__
    assert meta["appVersion"] == __version__


def test_chart_crd_is_the_crd():
    ours = (CHART / "crds" / crd.CRD_FILENAME).read_text()
    assert ours == (ROOT / "crds" / crd.CRD_FILENAME).read_text() == crd.render_crd_yaml()


def test_values_yaml_holds_the_defaults_and_passes_the_schema():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values == chart.ChartValues().model_dump(exclude_none=True)
    jsonschema.Draft202012Validator(chart.values_schema()).validate(values)


def test_every_value_is_documented_by_a_comment_starting_with_its_name():
    text = (CHART / "values.yaml").read_text()

    def walk(model: type[chart.BaseModel]) -> None:
        for name, field in model.model_fields.items():
            assert field.description, name
            assert f"# {name}: " in text, name
            if isinstance(field.default, chart.BaseModel):
                walk(type(field.default))

    walk(chart.ChartValues)


@pytest.mark.parametrize(
    "values",
    [
        {"image": {"digest": "latest"}},
        {"validatorImage": {"repository": "r/v"}},
        {"validatorImage": {"digest": "sha256:" + "a" * 64}},
        {"watchNamespaces": ["ns", "ns"]},
        {"unknown": 1},
    ],
)
def test_schema_refuses(values: dict):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(chart.values_schema()).validate(values)
