"""The Helm chart helm/rung without a cluster: its CRDs are crds/, and its schema checks values."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm/rung"
SYNC = "helm/rung/crds/ differs from crds/: run `cp crds/*.yaml helm/rung/crds/` and commit the result"


def test_chart_crds_are_the_generated_crds():
    ours = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_text() for p in (CHART / "crds").glob("*.yaml")}
    assert ours, "no CRDs in crds/"
    assert sorted(chart) == sorted(ours), SYNC
    for name, text in ours.items():
        assert chart[name] == text, f"{name}: {SYNC}"


def _schema() -> dict:
    return json.loads((CHART / "values.schema.json").read_text())


def _values() -> dict:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def test_default_values_pass_the_schema():
    jsonschema.validate(_values(), _schema())
    namespaced = _values()
    namespaced["watch"]["namespaces"] = ["team-a", "team-b"]
    namespaced["checkpoints"] = {"root": "s3://rung/studies", "secretName": "rung-s3"}
    jsonschema.validate(namespaced, _schema())


@pytest.mark.parametrize("path,value", [
    ("logLevel", "loud"),
    ("replicas", "two"),
    ("metrics.port", 0),
    ("checkpoints.root", "/var/lib/rung"),          # not a URI
    ("watch.namespaces", ["Team_A"]),               # not a namespace name
    ("studyPolicy.secretLabel", "rung.dev/credentials"),   # no =VALUE
    ("studyPolicy.allowPrivileged", "yes"),
    ("imagee", {}),                                 # a misspelt key
])
def test_the_schema_refuses_bad_values(path, value):
    values = copy.deepcopy(_values())
    *parents, last = path.split(".")
    node = values
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(values, _schema())
