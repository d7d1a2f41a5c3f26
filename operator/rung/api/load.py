"""Manifest loading: YAML text -> Study, with one-line errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from rung.api.study import API_VERSION, Study
from rung.errors import InputError

_PARAM_TYPES = ("float", "int", "categorical", "ordinal")


def load_study(path: str | Path) -> Study:
    """Read a Study manifest from a file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(str(path), f"cannot read the file ({e.strerror})", "give the path of a Study manifest")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise InputError(where, f"malformed YAML ({problem})", "fix the syntax at that line")
    return parse_study(doc, source=str(path))


def parse_study(doc: Any, source: str = "manifest") -> Study:
    """Validate a parsed manifest (a dict) as a Study."""
    if not isinstance(doc, dict):
        raise InputError(source, "is not a YAML mapping", "write a Study manifest (apiVersion, kind, metadata, spec)")
    kind = doc.get("kind")
    if kind != "Study":
        raise InputError("kind", f"{kind!r} is not a kind this command runs", "use kind: Study")
    if doc.get("apiVersion") != API_VERSION:
        raise InputError("apiVersion", f"{doc.get('apiVersion')!r} is not supported", f"use apiVersion: {API_VERSION}")
    try:
        return Study.model_validate(doc)
    except ValidationError as e:
        raise _first_error(e) from None


def _first_error(e: ValidationError) -> InputError:
    errors = e.errors()
    err = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    # Discriminated unions put the tag into the location; the user never wrote it.
    loc = [str(p) for p in err["loc"] if p not in _PARAM_TYPES]
    field = ".".join(loc) or "manifest"
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return InputError(field, "is required" + more, "add it")
    if kind == "extra_forbidden":
        return InputError(field, "is not a known field" + more, "remove it or fix its spelling")
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
