"""CustomResourceDefinitions (apiextensions.k8s.io/v1) generated from the pydantic models.

The API server needs *structural* schemas: every node has a type, no $ref, no oneOf/anyOf
that adds properties. pydantic's JSON Schema is turned into one by `structural()`:
  - $refs are inlined; `X | None` becomes X with `nullable: true`;
  - dict[str, Any] and Any become `x-kubernetes-preserve-unknown-fields: true`;
  - unions of scalars (categorical choices) keep any value; int|str is int-or-string;
  - a union of objects (the searchSpace parameter kinds) becomes ONE object holding every
    branch's properties, with only the properties all branches require still required;
  - draft 2020-12 exclusiveMinimum/Maximum numbers become OpenAPI v3.0's booleans;
  - title, default and pydantic's `additionalProperties: false` are dropped (the API server
    prunes unknown fields instead).
So the API server refuses wrong types and missing fields; the semantic checks (low <= high,
known algorithm name, ...) stay in the models and reach users as an `Invalid` condition.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from rung.api.archsearch import MUTABLE_SEARCH_SPEC, ArchitectureSearchSpec, ArchitectureSearchStatus
from rung.api.study import MUTABLE_SPEC, StudySpec, StudyStatus
from rung.api.trial import TrialSpec, TrialStatus

GROUP, VERSION = "rung.dev", "v1alpha1"
CATEGORY = "rung"   # `kubectl get rung` lists every Rung resource

_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_PHASE = {"name": "Phase", "type": "string", "jsonPath": ".status.phase"}

# kind, plural, short name, spec model, status model, printer columns
KINDS: list[tuple[str, str, str, type[BaseModel], type[BaseModel], list[dict]]] = [
    # priority 1: shown by `kubectl get -o wide` only
    ("Study", "studies", "study", StudySpec, StudyStatus, [
        _PHASE,
        {"name": "Best", "type": "number", "jsonPath": ".status.best.value"},
        {"name": "Completed", "type": "integer", "jsonPath": ".status.trials.completed"},
        {"name": "Running", "type": "integer", "jsonPath": ".status.trials.running"},
        _AGE,
        {"name": "Failed", "type": "integer", "jsonPath": ".status.trials.failed", "priority": 1},
        {"name": "Best-Trial", "type": "string", "jsonPath": ".status.best.trial", "priority": 1},
    ]),
    ("Trial", "trials", "trial", TrialSpec, TrialStatus, [
        {"name": "Study", "type": "string", "jsonPath": ".spec.study"},
        _PHASE,
        {"name": "Budget", "type": "number", "jsonPath": ".status.budget"},
        {"name": "Reached", "type": "number", "jsonPath": ".status.reached"},
        {"name": "Value", "type": "number", "jsonPath": ".status.value"},
        _AGE,
    ]),
    ("ArchitectureSearch", "architecturesearches", "archsearch", ArchitectureSearchSpec,
     ArchitectureSearchStatus, [
        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
        _PHASE,
        {"name": "Epoch", "type": "integer", "jsonPath": ".status.epoch"},
        {"name": "Val-Accuracy", "type": "number", "jsonPath": ".status.valAccuracy"},
        _AGE,
        {"name": "Study", "type": "string", "jsonPath": ".status.study", "priority": 1},
        {"name": "GPU-Hours", "type": "number", "jsonPath": ".status.gpuHours", "priority": 1},
    ]),
]

MUTABLE = {"Study": MUTABLE_SPEC, "ArchitectureSearch": MUTABLE_SEARCH_SPEC}   # spec fields that may change

HEADER = "# Generated from rung.api by `rung crds --write crds/`; do not edit.\n"

# Keys copied as they are; everything else is converted below or refused.
_KEEP = ("type", "format", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern",
         "minItems", "maxItems", "minProperties", "maxProperties")
_DROP = {"title", "default", "discriminator", "examples"}
_PRESERVE = {"x-kubernetes-preserve-unknown-fields": True}


def crds() -> list[dict]:
    """The CRDs of every Rung kind, in a fixed order."""
    return [crd(*k) for k in KINDS]


def crd(kind: str, plural: str, short: str, spec: type[BaseModel], status: type[BaseModel],
        columns: list[dict]) -> dict:
    spec_schema = model_schema(spec)
    if kind in MUTABLE:
        immutable(spec_schema, MUTABLE[kind], kind=kind)
    if kind == "Study":   # one objective form or the other, for good
        spec_schema["x-kubernetes-validations"] = [
            {"rule": "has(self.objective) != has(self.objectives)",
             "message": "spec: give objective (one metric) or objectives (several), not both and not neither"},
            {"rule": "has(self.objectives) == has(oldSelf.objectives)",
             "message": "spec.objectives cannot be added or removed once the Study exists; create a new Study"}]
    root = {
        "description": f"A Rung {kind}.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": model_schema(status),
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                      "singular": kind.lower(), "shortNames": [short], "categories": [CATEGORY]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }


def immutable(schema: dict, mutable: tuple[str, ...], where: str = "spec", kind: str = "Study") -> None:
    """Give every property of `schema` that is not (under) a `mutable` path a CEL
    transition rule refusing changes, so the API server turns the edit away with a message."""
    for name, prop in schema["properties"].items():
        inner = tuple(m[len(name) + 1:] for m in mutable if m.startswith(f"{name}."))
        if name in mutable:
            continue
        if inner:
            immutable(prop, inner, f"{where}.{name}", kind)
            continue
        prop["x-kubernetes-validations"] = [{
            "rule": "self == oldSelf",
            "message": f"{where}.{name} cannot change once the {kind} exists; create a new {kind} to change it"}]


def model_schema(model: type[BaseModel]) -> dict:
    """The structural schema of a model (its fields by their camelCase aliases)."""
    schema = model.model_json_schema(by_alias=True)
    return structural(schema, schema.get("$defs", {}))


def structural(node: dict, defs: dict) -> dict:
    """Turn one pydantic JSON Schema node into a structural OpenAPI v3 schema node."""
    return _ordered(_structural(node, defs))


def _structural(node: dict, defs: dict) -> dict:
    node = _resolve(node, defs)
    for key in ("anyOf", "oneOf"):
        if key in node:
            return _union([structural(b, defs) for b in node[key]], _description(node))
    if "allOf" in node:   # pydantic wraps a $ref with siblings this way
        (only,) = node["allOf"]
        return {**structural(only, defs), **_description(node)}

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _KEEP:
            out[key] = value
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound], out[key] = value, True
        elif key == "description":
            out.update(_description(node))
        elif key.startswith("x-kubernetes-"):
            out[key] = value
        elif key not in _DROP | {"properties", "required", "items", "additionalProperties", "$defs"}:
            raise ValueError(f"no structural form for JSON Schema keyword {key!r} in {node}")

    kind = node.get("type")
    if kind is None and not out.get("x-kubernetes-int-or-string"):
        return {**_PRESERVE, **out}   # Any
    if kind == "object":
        if "properties" in node:
            out["properties"] = {k: structural(v, defs) for k, v in node["properties"].items()}
            if node.get("required"):
                out["required"] = list(node["required"])
        else:
            extra = node.get("additionalProperties", True)
            if extra is True or extra == {}:
                out.update(_PRESERVE)   # free-form: dict[str, Any]
            else:
                out["additionalProperties"] = structural(extra, defs)
    elif kind == "array":
        if "items" not in node:
            raise ValueError(f"arrays need one item schema: {node}")
        out["items"] = structural(node["items"], defs)
    return out


# Keys of a schema node in the order they are written: the node's own keywords, then its children.
_ORDER = ("description", "type", "format", "nullable", "enum", "minimum", "exclusiveMinimum", "maximum",
          "exclusiveMaximum", "minLength", "maxLength", "pattern", "minItems", "maxItems", "minProperties",
          "maxProperties", "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
          "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "properties", "additionalProperties",
          "items", "required")


def _ordered(node: dict) -> dict:
    rank = {k: i for i, k in enumerate(_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _resolve(node: dict, defs: dict) -> dict:
    while "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        # The field's own keywords (its description) win over the referenced model's.
        node = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _description(node: dict) -> dict:
    text = (node.get("description") or "").strip().split("\n\n")[0]
    return {"description": " ".join(text.split())} if text else {}


def _union(branches: list[dict], description: dict) -> dict:
    nullable = any(b.get("type") == "null" for b in branches)
    rest = [b for b in branches if b.get("type") != "null"]
    types = {b.get("type") for b in rest}
    if len(rest) == 1:
        out = dict(rest[0])
    elif types == {"object"} and all("properties" in b for b in rest):
        out = _merge_objects(rest)
    elif types == {"integer", "string"} and len(rest) == 2:
        out = {"x-kubernetes-int-or-string": True}
    elif types == {"integer", "number"}:
        out = {"type": "number"}
    else:
        out = dict(_PRESERVE)   # a mix of scalars: any JSON value; the model checks it
    if nullable:
        out["nullable"] = True
    return {**out, **description}


def _merge_objects(branches: list[dict]) -> dict:
    """One object schema accepting every branch: the union of their properties."""
    props: dict[str, dict] = {}
    for branch in branches:
        for name, schema in branch["properties"].items():
            props[name] = _merge_property(props[name], schema, name) if name in props else schema
    required = [r for r in branches[0].get("required", []) if all(r in b.get("required", []) for b in branches)]
    out: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def _merge_property(a: dict, b: dict, name: str) -> dict:
    if a == b:
        return a
    if a.get("type") == b.get("type") and "enum" in a and "enum" in b:    # discriminator tags
        return {**a, "enum": a["enum"] + [v for v in b["enum"] if v not in a["enum"]]}
    if {a.get("type"), b.get("type")} == {"integer", "number"}:          # int and float bounds
        return a if a["type"] == "number" else b
    strip = lambda s: {k: v for k, v in s.items() if k != "description"}  # noqa: E731
    if strip(a) == strip(b):
        return a
    raise ValueError(f"union branches disagree on property {name!r}: {a} vs {b}")


def render(doc: dict) -> str:
    """One CRD as the YAML written to crds/ (deterministic, fields in a readable order)."""
    return HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)


def file_name(doc: dict) -> str:
    return f"{doc['metadata']['name']}.yaml"


def render_all() -> str:
    """Every CRD as one multi-document YAML stream."""
    return HEADER + "".join("---\n" + yaml.safe_dump(d, sort_keys=False, default_flow_style=False, width=100)
                            for d in crds())


def write(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for doc in crds():
        path = folder / file_name(doc)
        path.write_text(render(doc))
        paths.append(path)
    return paths
