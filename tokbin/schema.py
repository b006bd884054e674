"""Strict checking of parsed YAML/JSON against a dataclass: the one place that decides whether
a mapping has exactly a dataclass's keys and each value its annotated type. params.yaml and
the JSON files of the format use it, each with its own wording for the user."""
from __future__ import annotations

import dataclasses
import functools
import types
import typing


@functools.cache
def fields_of(cls) -> dict[str, object]:
    """The dataclass's field names and resolved annotations, in declaration order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def key_differences(raw: dict, cls, extra: dict | None = None) -> tuple[list[str], list[str]]:
    """(unknown keys, missing keys) of `raw` against `cls`'s fields and the `extra` keys, sorted;
    a field with a default may be absent."""
    fields = {**fields_of(cls), **(extra or {})}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return sorted(set(raw) - set(fields)), sorted((required | set(extra or {})) - set(raw))


def matches(value, hint) -> bool:
    """Whether a parsed YAML/JSON value has the annotated type: `int` is never a bool, `str`
    never empty, `X | None` admits None, `list[X]`, `tuple[X, ...]` (a JSON list) and
    `dict[str, X]` check every item, a dataclass is a mapping (its own fields checked apart)."""
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, option) for option in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list or origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, list) and all(matches(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(matches(k, key) and matches(v, item)
                                               for k, v in value.items())
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str) and value != ""
    return isinstance(value, hint)
