"""The CRDs in crds/: generated from rung.api, structural, complete, and they refuse wrong types."""

from __future__ import annotations

import copy
import typing
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import BaseModel

from rung.api import parse_study
from rung.api.archsearch import ArchitectureSearchSpec, ArchitectureSearchStatus
from rung.api.crd import KINDS, crds, file_name, render
from rung.api.study import BestTrial, Condition, StudyStatus, TopTrial, TrialCounts
from rung.api.trial import Segment, TrialSpec, TrialStatus
from rung.cli import main
from rung.errors import InputError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
REGENERATE = "crds/ is out of date with rung.api: run `rung crds --write crds/` and commit the result"


def _by_kind() -> dict[str, dict]:
    return {d["spec"]["names"]["kind"]: d for d in crds()}


def _schema(kind: str) -> dict:
    return _by_kind()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


# ---- drift ---------------------------------------------------------------------------------

def test_files_in_crds_are_what_the_models_generate():
    generated = {file_name(d): render(d) for d in crds()}
    on_disk = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    assert sorted(on_disk) == sorted(generated), REGENERATE
    for name, text in generated.items():
        assert on_disk[name] == text, f"{name}: {REGENERATE}"


def test_cli_prints_all_and_writes_one_file_per_kind(tmp_path, capsys):
    assert main(["crds"]) == 0
    assert list(yaml.safe_load_all(capsys.readouterr().out)) == crds()
    assert main(["crds", "--write", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "architecturesearches.rung.dev.yaml", "studies.rung.dev.yaml", "trials.rung.dev.yaml"]
    for doc in crds():
        assert yaml.safe_load((tmp_path / "out" / file_name(doc)).read_text()) == doc


def test_generation_is_deterministic():
    assert [render(d) for d in crds()] == [render(d) for d in crds()]


# ---- structural ----------------------------------------------------------------------------

_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
_ALLOWED = {"type", "description", "format", "nullable", "enum", "minimum", "maximum", "exclusiveMinimum",
            "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties",
            "maxProperties", "properties", "additionalProperties", "items", "required",
            "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "x-kubernetes-list-type",
            "x-kubernetes-list-map-keys", "x-kubernetes-validations"}


def structural_errors(node: dict, path: str = "openAPIV3Schema", root: bool = True) -> list[str]:
    """What the API server would refuse in a CRD schema (the subset of rules our generator can break)."""
    errors = []
    for key in node:
        if key not in _ALLOWED:   # $ref, oneOf/anyOf/allOf/not, default, title, const, prefixItems, ...
            errors.append(f"{path}.{key}: not allowed here")
    preserve = node.get("x-kubernetes-preserve-unknown-fields")
    int_or_string = node.get("x-kubernetes-int-or-string")
    if preserve is not None and preserve is not True:
        errors.append(f"{path}: x-kubernetes-preserve-unknown-fields must be true or absent")
    kind = node.get("type")
    if kind is None and not (preserve or int_or_string):
        errors.append(f"{path}: no type")
    if kind is not None and kind not in _TYPES:
        errors.append(f"{path}: type {kind!r} is not an OpenAPI type")
    if kind is not None and int_or_string:
        errors.append(f"{path}: int-or-string with a type")
    if root and (kind != "object" or node.get("nullable")):
        errors.append(f"{path}: the root must be a non-nullable object")
    if "properties" in node and "additionalProperties" in node:
        errors.append(f"{path}: properties and additionalProperties together")
    if ("properties" in node or "additionalProperties" in node) and kind != "object":
        errors.append(f"{path}: properties on a non-object")
    if kind == "array" and not isinstance(node.get("items"), dict):
        errors.append(f"{path}: an array needs one items schema")
    if "items" in node and kind != "array":
        errors.append(f"{path}: items on a non-array")
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if bound in node and (not isinstance(node[bound], bool) or bound.replace("exclusiveM", "m") not in node):
            errors.append(f"{path}.{bound}: must be a boolean beside {bound.replace('exclusiveM', 'm')}")
    for name in node.get("required", []):
        if name not in node.get("properties", {}):
            errors.append(f"{path}.required: {name!r} is not a property")
    if node.get("x-kubernetes-list-type") == "map":
        item = node.get("items", {})
        for k in node.get("x-kubernetes-list-map-keys", []):
            if k not in item.get("required", []):
                errors.append(f"{path}: list-map key {k!r} must be required in the items")
    if "enum" in node and kind in ("string", "integer", "number", "boolean"):
        py = {"string": str, "integer": int, "number": (int, float), "boolean": bool}[kind]
        errors += [f"{path}.enum: {v!r} is not a {kind}" for v in node["enum"] if not isinstance(v, py)]
    if isinstance(node.get("additionalProperties"), bool):
        errors.append(f"{path}.additionalProperties: a schema, not a boolean")
    for name, child in node.get("properties", {}).items():
        errors += structural_errors(child, f"{path}.properties[{name}]", False)
    for key in ("additionalProperties", "items"):
        if isinstance(node.get(key), dict):
            errors += structural_errors(node[key], f"{path}.{key}", False)
    return errors


@pytest.mark.parametrize("kind", [k[0] for k in KINDS])
def test_schemas_are_structural(kind):
    schema = _schema(kind)
    assert structural_errors(schema) == []
    # With the status subresource, the root may hold only these; metadata no more than a type.
    assert set(schema) <= {"type", "description", "properties", "required"}
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["required"] == ["spec"]
    assert set(schema["properties"]) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert "x-kubernetes-preserve-unknown-fields" not in schema["properties"]["status"]


def test_the_checker_catches_what_the_api_server_refuses():
    bad = {"type": "object", "properties": {
        "a": {"$ref": "#/$defs/A"},
        "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "c": {"type": "object", "properties": {"x": {"type": "string"}}, "additionalProperties": False},
        "d": {"type": "number", "exclusiveMinimum": 0},
        "e": {"type": "array"},
        "f": {"description": "no type"},
        "g": {"type": "object", "x-kubernetes-preserve-unknown-fields": False},
        "h": {"type": "string", "default": "x", "title": "H"},
    }}
    errors = "\n".join(structural_errors(bad))
    for name in "abcdefgh":
        assert f"properties[{name}]" in errors, name


# ---- complete: every model field is in the schema ---------------------------------------------

def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _object_of(schema: dict) -> dict:
    """The object schema a field's value is checked by (through lists and maps)."""
    while "properties" not in schema:
        schema = schema.get("items") or schema["additionalProperties"]
    return schema


def _missing(model: type[BaseModel], schema: dict, path: str, branch: bool = False) -> list[str]:
    """Fields of the model (by alias, recursively) the schema lacks, and required ones it does not
    require (but a union's branches share one schema, where only the common fields are required)."""
    missing = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if alias not in schema["properties"]:
            missing.append(f"{path}.{alias}")
            continue
        if field.is_required() and not branch and alias not in schema.get("required", []):
            missing.append(f"{path}.{alias} (not required)")
        subs = _models_in(field.annotation)
        for sub in subs:
            missing += _missing(sub, _object_of(schema["properties"][alias]), f"{path}.{alias}", len(subs) > 1)
    return missing


@pytest.mark.parametrize("kind,spec,status", [(k[0], k[3], k[4]) for k in KINDS])
def test_every_model_field_is_in_the_schema(kind, spec, status):
    props = _schema(kind)["properties"]
    assert _missing(spec, props["spec"], "spec") == []
    assert _missing(status, props["status"], "status") == []


def test_search_space_is_one_object_with_every_parameter_field():
    param = _schema("Study")["properties"]["spec"]["properties"]["searchSpace"]["additionalProperties"]
    assert param["type"] == "object" and param["required"] == ["type"]
    assert param["properties"]["type"]["enum"] == ["float", "int", "categorical", "ordinal"]
    assert {k: v["type"] for k, v in param["properties"].items()} == {
        "type": "string", "low": "number", "high": "number", "log": "boolean", "choices": "array", "values": "array"}
    assert param["properties"]["choices"]["items"] == {"x-kubernetes-preserve-unknown-fields": True}


# ---- validation: examples pass, wrong types are refused ------------------------------------------

def to_jsonschema(node: dict) -> dict:
    """A CRD schema as draft-4 JSON Schema (OpenAPI v3.0's boolean exclusiveMinimum), validating
    what the API server does: nullable, int-or-string, and unknown fields refused (kubectl asks for
    strict field validation; without it the server would drop them silently)."""
    out = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {k: to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = to_jsonschema(value)
        elif not key.startswith("x-kubernetes-") and key != "nullable":
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("nullable"):
        out["type"] = [out["type"], "null"] if "type" in out else None
        if "enum" in out:
            out["enum"] = out["enum"] + [None]
        out = {k: v for k, v in out.items() if v is not None}
    return out


def _errors(kind: str, doc: dict) -> list[str]:
    validator = jsonschema.Draft4Validator(to_jsonschema(_schema(kind)))
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc))


def _examples() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_examples_validate_against_their_crd():
    examples = _examples()
    assert {d["kind"] for _, d in examples} >= {"Study"}
    for name, doc in examples:
        assert doc["apiVersion"] == "rung.dev/v1alpha1", name
        assert _errors(doc["kind"], doc) == [], name


def _study() -> dict:
    return next(copy.deepcopy(d) for n, d in _examples() if n == "asha-mlp-digits.yaml")


def _set(doc: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = doc
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize("field,value,where", [
    ("spec.searchSpace.lr.low", "abc", "spec.searchSpace.lr.low"),
    ("spec.limits.maxTrials", "x", "spec.limits.maxTrials"),
    ("spec.limits.maxTrials", 0, "spec.limits.maxTrials"),
    ("spec.limits.parallelism", 1.5, "spec.limits.parallelism"),
    ("spec.trial.command", _DELETE, "spec.trial"),
    ("spec.trial.command", [], "spec.trial.command"),
    ("spec.trial.command", "python train.py", "spec.trial.command"),
    ("spec.trial.resources", {"cpu": ["1"]}, "spec.trial.resources.cpu"),
    ("spec.searchSpace.lr.type", "beta", "spec.searchSpace.lr.type"),
    ("spec.searchSpace.lr.log", "yes", "spec.searchSpace.lr.log"),
    ("spec.searchSpace.activation.choices", "relu", "spec.searchSpace.activation.choices"),
    ("spec.budget.min", 0, "spec.budget.min"),
    ("spec.objective.goal", "maximise", "spec.objective.goal"),
    ("spec.algorithm.settings", "fast", "spec.algorithm.settings"),
    ("spec.limits.maxTrails", 10, "spec.limits"),
    ("spec.checkpoints", {"uri": "ftp://x"}, "spec.checkpoints.uri"),             # unknown scheme
    ("spec.checkpoints", {"uri": "file://relative/x"}, "spec.checkpoints.uri"),   # not absolute
    ("spec.checkpoints", {"uri": "s3://"}, "spec.checkpoints.uri"),               # no bucket
    ("spec", _DELETE, ""),
])
def test_wrong_types_and_missing_fields_are_refused(field, value, where):
    errors = _errors("Study", _set(_study(), field, value))
    assert errors and all(e.startswith(f"{where}:") for e in errors), errors


@pytest.mark.parametrize("field,value", [
    ("spec.searchSpace.lr.low", 1.0),          # above high
    ("spec.searchSpace.lr.low", -1.0),         # log scale with low <= 0
    ("spec.algorithm.name", "simplex"),        # unknown algorithm
    ("spec.objective", _DELETE),               # neither objective nor objectives (a CEL rule on a server)
])
def test_semantic_errors_pass_the_schema_and_are_caught_by_the_model(field, value):
    doc = _set(_study(), field, value)
    assert _errors("Study", doc) == []   # the operator reports these as an Invalid condition
    with pytest.raises(InputError):
        parse_study(doc)


def test_optional_fields_may_be_null_and_choices_any_scalar():
    doc = _set(_study(), "spec.trial.image", None)
    doc["spec"]["checkpoints"] = {"uri": None, "secretRef": None}
    doc["spec"]["searchSpace"]["mixed"] = {"type": "ordinal", "values": [1, 2.5, "x", True]}
    assert _errors("Study", doc) == []
    parse_study(doc)


# ---- status: what the operator writes from the models passes the schema ----------------------------

def _dump(model: BaseModel, exclude_none: bool) -> dict:
    return model.model_dump(mode="json", by_alias=True, exclude_none=exclude_none)


def _specs() -> dict[str, dict]:
    return {"Study": _study()["spec"], "Trial": {"study": "s", "index": 0},
            "ArchitectureSearch": {"method": "asap", "dataset": "cifar10", "trial": {"command": ["nas"]}}}


@pytest.mark.parametrize("exclude_none", [True, False])
def test_statuses_written_from_the_models_validate(exclude_none):
    condition = Condition(type="Ready", status="True", reason="Running", message="2 trials running",
                          last_transition_time="2025-01-01T00:00:00Z")
    study = StudyStatus(phase="Running", trials=TrialCounts(total=3, running=2, completed=1),
                        best=BestTrial(trial="s-0", value=0.25, budget=9, params={"lr": 0.01, "act": "relu"}),
                        top=[TopTrial(trial="s-0", value=0.25, budget=9)], elapsed=12.5,
                        conditions=[condition], observed_generation=2)
    trial = TrialStatus(phase="Running", budget=9, reached=3, value=0.3, conditions=[condition], segments=[
        Segment(budget=3, status="completed", loss=0.3, reached=3, exit_code=0, pod="s-0-s0",
                started=1735689600.0, ended=1735689660.5, elapsed=60.5,
                metrics={"val_loss": 0.3, "acc": 0.9}, curve=[[1, 0.5], [3, 0.3]]),
        Segment(budget=9, resume_from=3, pod="s-0-s1")])
    search = ArchitectureSearchStatus(phase="Succeeded", genotype={"normal": [["sep_conv_3x3", 0]]})
    specs = _specs()
    for kind, status in (("Study", study), ("Trial", trial), ("ArchitectureSearch", search)):
        assert _errors(kind, {"spec": specs[kind], "status": _dump(status, exclude_none)}) == [], kind
        empty = type(status)()   # what a fresh object gets
        assert _errors(kind, {"spec": specs[kind], "status": _dump(empty, exclude_none)}) == [], kind
        # and what the API server hands back parses into the same model
        assert type(status).model_validate(_dump(status, exclude_none)) == status


def test_segments_as_the_records_keep_them_fit_the_trial_status():
    # The operator writes rung.records.SegmentRecord into Trial status (camelCase keys):
    # every field must survive the API server's pruning and parse back.
    from dataclasses import asdict, fields

    from pydantic.alias_generators import to_camel

    from rung.controller.trial_store import segment_to_status
    from rung.records import SegmentRecord

    seg = SegmentRecord(budget=9, resume_from=3, status="completed", loss=0.2, objectives=[0.2, 3.0], reached=9, curve=[[4, 0.5], [9, 0.2]],
                     metrics={"val_loss": 0.2}, started=1735689600.0, ended=1735689700.0, elapsed=100.0,
                     exit_code=0, reason="", restarts=1, losses=1, stop_requested=True, gpus=4, efficiency=0.73,
                     sizing="4 GPUs: E(5) = 0.67 < 0.70")
    doc = segment_to_status(seg)
    assert set(doc) == {to_camel(k) for k in asdict(seg)}
    assert set(doc) <= set(_schema("Trial")["properties"]["status"]["properties"]["segments"]["items"]["properties"])
    assert {to_camel(f.name) for f in fields(SegmentRecord)} <= {f.alias for f in Segment.model_fields.values()}
    assert _errors("Trial", {"spec": _specs()["Trial"], "status": {"phase": "Succeeded", "segments": [doc]}}) == []
    assert Segment.model_validate(doc).model_dump(by_alias=True, exclude={"pod"}) == doc


def test_status_refuses_wrong_types():
    doc = {"spec": {"study": "s", "index": 0}, "status": {"phase": "Done", "budget": "nine",
                                                          "segments": [{"status": "running"}],
                                                          "conditions": [{"type": "Ready", "status": "yes"}]}}
    assert _errors("Trial", doc) == [
        "status.budget: 'nine' is not of type 'number', 'null'",
        "status.conditions.0.status: 'yes' is not one of ['True', 'False', 'Unknown']",
        "status.phase: 'Done' is not one of ['Pending', 'Running', 'Succeeded', 'Failed', 'Stopped']",
        "status.segments.0: 'budget' is a required property",
    ]
    top = [{"trial": f"s-{i}", "value": 0.1, "budget": 1} for i in range(11)]
    assert _errors("Study", {"spec": _study()["spec"], "status": {"top": top}}) == [
        f"status.top: {top!r} is too long"]


def test_trial_and_archsearch_specs():
    trial = {"spec": {"study": "mlp-digits", "index": 3, "params": {"lr": 0.01, "hidden": 64, "act": "relu"}}}
    assert _errors("Trial", trial) == []
    TrialSpec.model_validate(trial["spec"])
    assert _errors("Trial", {"spec": {"study": "s", "index": -1}}) == ["spec.index: -1 is less than the minimum of 0"]
    search = {"spec": {"method": "darts", "dataset": "cifar10", "epochs": 50, "settings": {"layers": 8},
                       "trial": {"command": ["python", "-m", "rung.nas"]}}}
    assert _errors("ArchitectureSearch", search) == []
    ArchitectureSearchSpec.model_validate(search["spec"])
    bad = _set(copy.deepcopy(search), "spec.method", "enas")
    assert _errors("ArchitectureSearch", _set(bad, "spec.epochs", 0)) == [
        "spec.epochs: 0 is less than the minimum of 1",
        "spec.method: 'enas' is not one of ['darts', 'asap']"]


# ---- names, columns, subresources -------------------------------------------------------------

def test_names_printer_columns_and_status_subresource():
    by_kind = _by_kind()
    expected = {
        "Study": ("studies", "study", ["Phase", "Best", "Completed", "Running", "Age", "Failed", "Best-Trial"]),
        "Trial": ("trials", "trial", ["Study", "Phase", "Budget", "Reached", "Value", "Age"]),
        "ArchitectureSearch": ("architecturesearches", "archsearch", ["Method", "Phase", "Epoch", "Val-Accuracy", "Age", "Study", "GPU-Hours"]),
    }
    assert list(by_kind) == list(expected)
    for kind, (plural, short, columns) in expected.items():
        doc = by_kind[kind]
        assert doc["apiVersion"] == "apiextensions.k8s.io/v1"
        assert doc["metadata"]["name"] == f"{plural}.rung.dev"
        spec = doc["spec"]
        assert spec["group"] == "rung.dev" and spec["scope"] == "Namespaced"
        assert spec["names"]["plural"] == plural and spec["names"]["shortNames"] == [short]
        (version,) = spec["versions"]
        assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
        assert version["subresources"] == {"status": {}}
        assert [c["name"] for c in version["additionalPrinterColumns"]] == columns


@pytest.mark.parametrize("kind", [k[0] for k in KINDS])
def test_printer_columns_point_at_fields_of_their_type(kind):
    doc = _by_kind()[kind]
    version = doc["spec"]["versions"][0]
    for column in version["additionalPrinterColumns"]:
        assert column["type"] in {"integer", "number", "string", "boolean", "date"}
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        node = version["schema"]["openAPIV3Schema"]
        for part in column["jsonPath"].lstrip(".").split("."):
            node = node["properties"][part]
        assert node["type"] == column["type"], column


def test_study_columns_are_the_agreed_ones():
    columns = _by_kind()["Study"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == [
        ("Phase", "string", ".status.phase"),
        ("Best", "number", ".status.best.value"),
        ("Completed", "integer", ".status.trials.completed"),
        ("Running", "integer", ".status.trials.running"),
        ("Age", "date", ".metadata.creationTimestamp"),
        ("Failed", "integer", ".status.trials.failed"),        # -o wide
        ("Best-Trial", "string", ".status.best.trial"),        # -o wide
    ]
    assert [c.get("priority", 0) for c in columns] == [0, 0, 0, 0, 0, 1, 1]


def test_the_generator_refuses_what_it_cannot_express():
    from typing import Literal, Union

    from rung.api.crd import model_schema

    class Pair(BaseModel):
        pair: tuple[int, str]

    class A(BaseModel):
        kind: Literal["a"]
        x: int

    class B(BaseModel):
        kind: Literal["b"]
        x: str

    class Clash(BaseModel):
        item: Union[A, B]

    with pytest.raises(ValueError, match="prefixItems"):
        model_schema(Pair)
    with pytest.raises(ValueError, match="disagree on property 'x'"):
        model_schema(Clash)
