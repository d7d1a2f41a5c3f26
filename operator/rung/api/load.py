"""Manifest loading: YAML text -> Study, with one-line errors that name the field and the fix."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from rung.api.archsearch import ArchitectureSearch
from rung.api.study import API_VERSION, Study
from rung.errors import InputError

_PARAM_TYPES = ("float", "int", "categorical", "ordinal")
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec", "status")
RUNNABLE = ("Study", "ArchitectureSearch")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one mapping", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_study(path: str | Path) -> Study:
    """Read a Study manifest from a file."""
    return parse_study(read_manifest(path), source=str(path))


def load_manifest(path: str | Path) -> "Study | ArchitectureSearch":
    """Read a Study or an ArchitectureSearch manifest from a file."""
    doc = read_manifest(path)
    if isinstance(doc, dict) and doc.get("kind") == "ArchitectureSearch":
        return parse_archsearch(doc, source=str(path))
    return parse_study(doc, source=str(path))


def read_manifest(path: str | Path) -> Any:
    """A manifest file's YAML, parsed (a duplicated key is an error)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(str(path), f"cannot read the file ({e.strerror})", "give the path of a Study manifest")
    except UnicodeDecodeError as e:
        raise InputError(str(path), f"is not UTF-8 text (byte {e.start})", "save the manifest as UTF-8")
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(where, f"malformed YAML ({problem})", "fix the syntax at that line")


def parse_study(doc: Any, source: str = "manifest") -> Study:
    """Validate a parsed manifest (a dict) as a Study."""
    return _parse(doc, source, Study)


def parse_archsearch(doc: Any, source: str = "manifest") -> ArchitectureSearch:
    """Validate a parsed manifest (a dict) as an ArchitectureSearch, its method's settings included."""
    search = _parse(doc, source, ArchitectureSearch)
    search.spec.search_settings()
    return search


def _parse(doc: Any, source: str, model: type[BaseModel]):
    kind = model.model_fields["kind"].default
    if not isinstance(doc, dict):
        raise InputError(source, "is not a YAML mapping", f"write a {kind} manifest (apiVersion, kind, metadata, spec)")
    if doc.get("kind") != kind:
        hint = "use kind: Study or kind: ArchitectureSearch" if doc.get("kind") not in RUNNABLE else f"use kind: {kind}"
        raise InputError("kind", f"{doc.get('kind')!r} is not a kind this command runs", hint)
    if doc.get("apiVersion") != API_VERSION:
        raise InputError("apiVersion", f"{doc.get('apiVersion')!r} is not supported", f"use apiVersion: {API_VERSION}")
    for key in doc:
        if key not in _TOP_LEVEL:
            raise _unknown(str(key), _TOP_LEVEL)
    try:
        return model.model_validate(doc)
    except ValidationError as e:
        raise _first_error(e, model) from None


def _unknown(field: str, known) -> InputError:
    name = field.rpartition(".")[2]
    close = difflib.get_close_matches(name, [k for k in known if k != name], n=1, cutoff=0.6)
    fix = f"did you mean {field[:len(field) - len(name)]}{close[0]}?" if close else "remove it or fix its spelling"
    return InputError(field, "is not a known field", fix)


def _known_fields(loc: tuple, root: type[BaseModel]) -> list[str]:
    """The field names (as written in manifests) of the model at `loc` under `root`, if any."""
    model: Any = root
    for part in loc:
        fields = {f.alias or n: f for n, f in model.model_fields.items()}
        if part not in fields:
            return []
        model = fields[part].annotation
        if isinstance(model, types.UnionType) or typing.get_origin(model) is typing.Union:
            model = next((a for a in typing.get_args(model) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _first_error(e: ValidationError, root: type[BaseModel]) -> InputError:
    errors = e.errors()
    # A misspelt field also shows as its correct name missing: name the misspelling.
    errors.sort(key=lambda err: err["type"] != "extra_forbidden")
    err = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    # Discriminated unions put the tag into the location; the user never wrote it.
    loc = [str(p) for p in err["loc"] if p not in _PARAM_TYPES]
    field = ".".join(loc) or "manifest"
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return InputError(field, "is required" + more, "add it")
    if kind == "extra_forbidden":
        return _unknown(field, _known_fields(tuple(loc[:-1]), root))
    if kind == "union_tag_invalid":
        return InputError(field + ".type", f"{err['input'].get('type')!r} is not a parameter type" + more,
                          f"use one of: {', '.join(_PARAM_TYPES)}")
    if kind == "union_tag_not_found":
        return InputError(field + ".type", "is missing" + more, f"add type: one of {', '.join(_PARAM_TYPES)}")
    if kind == "value_error":
        problem, _, fix = msg.removeprefix("Value error, ").partition("; ")
        return InputError(field, problem + more, fix)
    return InputError(field, f"{msg[0].lower()}{msg[1:]} (got {err.get('input')!r})" + more,
                      "fix the value")
