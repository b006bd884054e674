"""params.yaml, parsed strictly: every stage reads its parameters through `load_params`.

Each section is a dataclass; its fields are the keys, their annotations the types, `CHOICES`
the allowed values and `MINIMUMS` the smallest. An unknown, misplaced or missing key, a wrong
type or an invalid value is a TokbinError that names the key and says what is valid.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from tokbin import schema
from tokbin.errors import TokbinError
from tokbin.format import DTYPES, EOT_POLICIES


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    dataset: str
    revision: str
    splits: list[str]
    text_column: str


@dataclasses.dataclass(frozen=True)
class TokenizeParams:
    encoding: str
    eot: str
    engine: str
    executor: str


@dataclasses.dataclass(frozen=True)
class BinarizeParams:
    dtype: str
    shard_tokens: int


@dataclasses.dataclass(frozen=True)
class Params:
    download: DownloadParams
    tokenize: TokenizeParams
    binarize: BinarizeParams


ENGINES = ("tiktoken", "fastokens")
EXECUTORS = ("local", "ray")
CHOICES = {
    "tokenize.eot": EOT_POLICIES,
    "tokenize.engine": ENGINES,
    "tokenize.executor": EXECUTORS,
    "binarize.dtype": ("auto", *DTYPES),
}
MINIMUMS = {"binarize.shard_tokens": (0, "0 (one bin per split) or the most tokens per shard "
                                         "(e.g. 100000000)")}


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokbinError(f"{path} not found: run from the repository root") from None
    return parse_params(text, path)


def parse_params(text: str, path: Path) -> Params:
    """params.yaml's text (from `path`, which the messages name), checked."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TokbinError(f"{path} is not valid YAML: {e}") from None
    if isinstance(raw, dict):
        _check_placement(raw, path)
    return _parse(Params, raw, "", path)


def _check_placement(raw: dict, path: Path) -> None:
    """A key of one section found in another (`eot: none` under `binarize:`) or at the top
    level is reported as misplaced, with where it belongs."""
    sections = schema.fields_of(Params)
    found = [(section, key) for section, keys in raw.items() if isinstance(keys, dict)
             and section in sections for key in keys]
    found += [(None, key) for key in raw if key not in sections]
    for section, key in found:
        homes = [home for home, hint in sections.items() if key in schema.fields_of(hint)]
        if not homes or section in homes:
            continue
        home, where = homes[0], f"{section}.{key}" if section else f"{key} (at the top level)"
        fix = (f"remove it there: {home}.{key} is already set" if key in (raw.get(home) or {})
               else f"move it under {home}:")
        raise TokbinError(f"{path}: {where} is misplaced: {key} is a key of {home}: "
                          f"({home}.{key}); {fix}")


def _parse(cls, raw, prefix: str, path: Path):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise TokbinError(f"{path}: {where} must be a mapping of keys, got {raw!r}")
    fields = schema.fields_of(cls)
    unknown, missing = schema.key_differences(raw, cls)
    if unknown:
        raise TokbinError(f"{path}: unknown key {prefix}{unknown[0]} in {where} "
                          f"(valid keys: {', '.join(fields)}); remove or rename it")
    if missing:
        raise TokbinError(f"{path}: missing key {prefix}{missing[0]}; add it (see the README's "
                          "params section for its meaning and default)")
    values = {}
    for key, hint in fields.items():
        name, value = prefix + key, raw[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _parse(hint, value, name + ".", path)
            continue
        values[key] = _check_type(name, value, hint, path)
        choices = CHOICES.get(name)
        if choices is not None and value not in choices:
            raise TokbinError(f"{path}: {name} is {value!r}; valid values: {', '.join(choices)}")
        if name in MINIMUMS and value < MINIMUMS[name][0]:
            raise TokbinError(f"{path}: {name} is {value}; set it to {MINIMUMS[name][1]}")
    return cls(**values)


def _check_type(name: str, value, hint, path: Path):
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        if not value or not schema.matches(value, hint):
            raise TokbinError(f"{path}: {name} must be a non-empty list of {item.__name__}, "
                              f"got {value!r}")
        if len(set(value)) != len(value):
            raise TokbinError(f"{path}: {name} lists an entry twice: {value!r}")
        return list(value)
    if hint is int and isinstance(value, (str, float)) and _whole_number(value) is not None:
        # PyYAML reads 1e6 as text and 1.0e+6 as a float: neither is an integer to it
        raise TokbinError(f"{path}: {name} is {value}, which YAML reads as "
                          f"{_yaml_kind(value)}, not an integer; write it in digits: "
                          f"{name.rpartition('.')[2]}: {_whole_number(value)}")
    if not schema.matches(value, hint):
        raise TokbinError(f"{path}: {name} must be {TYPE_NAMES[hint]}, got {value!r} "
                          f"({_yaml_kind(value)})")
    return value


TYPE_NAMES = {int: "an integer", str: "non-empty text"}


def _whole_number(value: str | float) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _yaml_kind(value) -> str:
    """What YAML made of a value, in its terms."""
    if value is None:
        return "empty"
    kinds = {bool: "true/false", int: "an integer", float: "a decimal number", str: "text",
             list: "a list", dict: "a mapping"}
    return kinds.get(type(value), type(value).__name__)
