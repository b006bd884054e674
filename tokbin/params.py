"""params.yaml, parsed strictly: every stage reads its parameters through `load_params`.

Each section is a dataclass; its fields are the keys, their annotations the types and
`CHOICES` the allowed values. An unknown key, a missing key, a wrong type or an invalid choice
is a TokbinError that names the key and lists what is valid.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from tokbin.engines import ENGINES
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


CHOICES = {
    "tokenize.eot": EOT_POLICIES,
    "tokenize.engine": ENGINES,
    "tokenize.executor": ("local", "ray"),
    "binarize.dtype": ("auto", *DTYPES),
}


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TokbinError(f"{path} not found: run from the repository root") from None
    except yaml.YAMLError as e:
        raise TokbinError(f"{path} is not valid YAML: {e}") from None
    return _parse(Params, raw, "", path)


def _parse(cls, raw, prefix: str, path: Path):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise TokbinError(f"{path}: {where} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(hints))
    if unknown:
        raise TokbinError(f"{path}: unknown key {prefix}{unknown[0]} in {where} "
                          f"(valid keys: {', '.join(hints)}); remove or rename it")
    values = {}
    for key, hint in hints.items():
        name = prefix + key
        if key not in raw:
            raise TokbinError(f"{path}: missing key {name}; add it (see the README's params "
                              "section for its meaning and default)")
        value = raw[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _parse(hint, value, name + ".", path)
            continue
        values[key] = _check_type(name, value, hint, path)
        choices = CHOICES.get(name)
        if choices is not None and value not in choices:
            raise TokbinError(f"{path}: {name} is {value!r}; valid values: {', '.join(choices)}")
    return cls(**values)


def _check_type(name: str, value, hint, path: Path):
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list) or not value or not all(
                _is_instance(v, item) for v in value):
            raise TokbinError(f"{path}: {name} must be a non-empty list of {item.__name__}, "
                              f"got {value!r}")
        if len(set(value)) != len(value):
            raise TokbinError(f"{path}: {name} lists an entry twice: {value!r}")
        return list(value)
    if not _is_instance(value, hint):
        raise TokbinError(f"{path}: {name} must be a {hint.__name__}, got {value!r} "
                          f"({type(value).__name__})")
    return value


def _is_instance(value, hint) -> bool:
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) and (hint is not str or value != "")
