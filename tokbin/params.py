"""params.yaml, parsed strictly: every stage reads its parameters through `load_params`.

Each section is a dataclass; its fields are the keys, their annotations the types and
`CHOICES` the allowed values. An unknown key, a missing key, a wrong type or an invalid choice
is a TokbinError that names the key and lists what is valid.
"""
from __future__ import annotations

import dataclasses
import types
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
    eot_token: str | None                       # the separator token (None: the tokenizer's)
    pattern: str | None                         # a tiktoken rank file's split regex or preset
    special_tokens: str | dict[str, int] | None  # a rank file's special tokens, or a preset


@dataclasses.dataclass(frozen=True)
class BinarizeParams:
    dtype: str
    shard_tokens: int


@dataclasses.dataclass(frozen=True)
class Params:
    download: DownloadParams
    tokenize: TokenizeParams
    binarize: BinarizeParams


ENGINES = ("fastokens", "reference", "tiktoken")  # tiktoken: the reference of tiktoken kinds
EXECUTORS = ("local", "ray")
CHOICES = {
    "tokenize.eot": EOT_POLICIES,
    "tokenize.engine": ENGINES,
    "tokenize.executor": EXECUTORS,
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
    params = _parse(Params, raw, "", path)
    _check_special_tokens(params.tokenize.special_tokens, path)
    return params


def _check_special_tokens(special_tokens, path: Path) -> None:
    if not isinstance(special_tokens, dict):
        return
    owner: dict[int, str] = {}
    for name, token_id in special_tokens.items():
        if token_id < 0:
            raise TokbinError(f"{path}: tokenize.special_tokens gives {name} the id {token_id}; "
                              "ids are >= 0")
        if token_id in owner:
            raise TokbinError(f"{path}: tokenize.special_tokens gives the id {token_id} to both "
                              f"{owner[token_id]} and {name}; each needs its own")
        owner[token_id] = name


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
    if not schema.matches(value, hint) or value == {}:
        raise TokbinError(f"{path}: {name} must be {_describe(hint)}, got {value!r} "
                          f"({type(value).__name__})")
    return value


def _describe(hint) -> str:
    """A type annotation in the words of a params.yaml user."""
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is dict:
        key, item = typing.get_args(hint)
        return f"a mapping of {key.__name__} to {item.__name__}"
    return f"a {hint.__name__}"
