"""params.yaml, parsed strictly: every stage reads its parameters through `load_params`.

Each section is a dataclass; its fields are the keys, their annotations the types, `CHOICES`
the allowed values and `MINIMUMS` the smallest. An unknown, misplaced or missing key, a wrong
type or an invalid value is a TokbinError that names the key and says what is valid (the check
stage runs this before DVC deletes any output). Values that come in several forms
(`download.splits`, `download.data_files`) are normalised to one here, so no stage sees the
others.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from pathlib import Path

import numpy as np
import yaml

from tokbin import schema
from tokbin.errors import TokbinError
from tokbin.format import (BIN_FORMATS, DTYPES, EOT_POLICIES, HOLDOUT_BIN, HOLDOUT_FROM, Holdout,
                           bin_splits)
from tokbin.yaml_versions import check_yaml_versions_agree


@dataclasses.dataclass(frozen=True)
class DownloadParams:
    dataset: str
    config: str | None
    revision: str
    materialize: bool
    data_files: str | list[str] | dict[str, str | list[str]] | None
    splits: list[str] | dict[str, str]
    text_column: str
    sample_by: str | None
    separator: str | None
    holdout: Holdout | None

    @property
    def bins(self) -> dict[str, str]:
        """bin name -> the dataset split it holds (the list form maps each name to itself)."""
        return bin_splits(self.splits)

    @property
    def written_bins(self) -> list[str]:
        """Every bin the pipeline writes: one per split, and validation drawn by a holdout."""
        return list(self.bins) + ([HOLDOUT_BIN] if self.holdout is not None else [])

    @property
    def data_files_by_split(self) -> dict[str, list[str]] | None:
        """data_files as load_dataset reads it: a glob or a list of globs is the train split's."""
        files = self.data_files
        if files is None:
            return None
        if not isinstance(files, dict):
            files = {"train": files}
        return {split: [globs] if isinstance(globs, str) else list(globs)
                for split, globs in files.items()}


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
    format: str
    shard_tokens: int


@dataclasses.dataclass(frozen=True)
class Params:
    download: DownloadParams
    tokenize: TokenizeParams
    binarize: BinarizeParams


ENGINES = ("fastokens", "reference", "tiktoken")  # tiktoken: the reference of tiktoken kinds
EXECUTORS = ("local", "ray")
SAMPLE_BY = ("line", "paragraph", "document")
CHOICES = {
    "download.sample_by": SAMPLE_BY,
    "tokenize.eot": EOT_POLICIES,
    "tokenize.engine": ENGINES,
    "tokenize.executor": EXECUTORS,
    "binarize.dtype": ("auto", *DTYPES),
    "binarize.format": BIN_FORMATS,
}
MINIMUMS = {"binarize.shard_tokens": (0, "0 (one bin per split) or the most tokens per shard "
                                         "(e.g. 100000000)")}
BIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a bin's name is a file name in data/


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    return parse_params(read_params_text(path), path)


def read_params_text(path: Path) -> str:
    """params.yaml's text; where it is not found, the message says to run in the project."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TokbinError(f"{path} not found: run from the repository root (the tokbin "
                          "checkout holding params.yaml and dvc.yaml)") from None


class _DuplicateKey(Exception):
    pass


class _UniqueKeys(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last
    silently: an edit of the first would change nothing)."""

    def construct_mapping(self, node, deep=False):
        lines: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str) and key in lines:
                raise _DuplicateKey(f"key {key!r} is given twice (lines {lines[key]} and "
                                    f"{key_node.start_mark.line + 1}); remove one")
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_params(text: str, path: Path) -> Params:
    """params.yaml's text (from `path`, which the messages name), checked."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeys)
    except yaml.YAMLError as e:
        raise TokbinError(f"{path}: not valid YAML: {e}") from None
    except _DuplicateKey as e:
        raise TokbinError(f"{path}: {e}") from None
    if isinstance(raw, dict):
        _check_placement(raw, path)
    params = _parse(Params, raw, "", path)
    check_yaml_versions_agree(text, raw, path)  # after the keys and types are known good
    check_download(params.download, path)
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
        nested = [h for h in _options(hint) if dataclasses.is_dataclass(h)]
        if nested and isinstance(value, dict):
            try:
                values[key] = _parse(nested[0], value, name + ".", path)
            except TokbinError as e:  # the dataclass's own checks (Holdout's ranges)
                raise TokbinError(str(e) if str(e).startswith(f"{path}:")
                                  else f"{path}: {name}: {e}") from None
            continue
        values[key] = _check_type(name, value, hint, path)
        choices = CHOICES.get(name)
        if choices is not None and value is not None and value not in choices:
            raise TokbinError(f"{path}: {name} is {value!r}; valid values: {', '.join(choices)}"
                              + (" (or null)" if type(None) in _options(hint) else ""))
        if name in MINIMUMS and value < MINIMUMS[name][0]:
            raise TokbinError(f"{path}: {name} is {value}; set it to {MINIMUMS[name][1]}")
    return cls(**values)


def _options(hint) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _describe(hint) -> str:
    """A type annotation in the words of a params.yaml user."""
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping {" + ", ".join(f"{k}: ..." for k in schema.fields_of(hint)) + "}"
    if hint is int:
        return "an integer"
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    if origin is list:
        return f"a non-empty list of {_describe(typing.get_args(hint)[0]).removeprefix('a ')}"
    if origin is dict:
        key, item = typing.get_args(hint)
        item_text = _describe(item).removeprefix("a ")
        if typing.get_origin(item) in (typing.Union, types.UnionType):
            item_text = f"({item_text})"
        return f"a mapping of {_describe(key).removeprefix('a ')} to {item_text}"
    return f"a {hint.__name__}"


def _check_type(name: str, value, hint, path: Path):
    """`value` if it has the annotated type (lists and mappings non-empty, list entries
    unique), else a TokbinError naming the key, the accepted forms and what it got."""
    if hint is int and isinstance(value, (str, float)) and _whole_number(value) is not None:
        # PyYAML reads 1e6 as text and 1.0e+6 as a float: neither is an integer to it
        raise TokbinError(f"{path}: {name} is {value}, which YAML reads as "
                          f"{'text' if isinstance(value, str) else 'a decimal number'}, not an "
                          f"integer; write it in digits: {name.rpartition('.')[2]}: "
                          f"{_whole_number(value)}")
    if hint is float and isinstance(value, str) and _finite(value) is not None:
        # PyYAML reads 5e-4 as text (YAML 1.1 wants 5.0e-4)
        raise TokbinError(f"{path}: {name} is {value}, which YAML reads as text, not a number; "
                          f"write it with a point: {name.rpartition('.')[2]}: "
                          f"{np.format_float_positional(_finite(value), trim='-')}")
    if value == "":
        raise TokbinError(f"{path}: {name} must be {_describe(hint)}, not an empty string")
    if not schema.matches(value, hint) or _holds_an_empty(value):
        raise TokbinError(f"{path}: {name} must be {_describe(hint)}, got {value!r} "
                          f"({type(value).__name__})")
    if isinstance(value, list) and len(set(map(str, value))) != len(value):
        raise TokbinError(f"{path}: {name} lists an entry twice: {value!r}")
    return value


def _finite(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _whole_number(value: str | float) -> int | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def _holds_an_empty(value) -> bool:
    """Whether `value` is, or holds at any depth, an empty list or mapping."""
    if not isinstance(value, (list, dict)):
        return False
    return not value or any(map(_holds_an_empty, value.values() if isinstance(value, dict)
                                else value))


def check_download(download: DownloadParams, path: Path) -> None:
    """The rules between download's keys, checked before any stage works."""
    bins = download.bins
    for bin_name in bins:
        if not BIN_NAME.fullmatch(bin_name):
            raise TokbinError(f"{path}: download.splits: {bin_name!r} cannot be a bin's name "
                              "(it becomes data/<name>.bin): use letters, digits, '_', '-', '.'")
    if isinstance(download.splits, dict):
        taken = list(bins.values())
        twice = next((s for s in taken if taken.count(s) > 1), None)
        if twice is not None:
            raise TokbinError(f"{path}: download.splits maps two bins to the dataset split "
                              f"{twice!r}; map each bin to its own split (download.holdout "
                              f"draws {HOLDOUT_BIN}.bin from {HOLDOUT_FROM})")
    if download.holdout is not None:
        if HOLDOUT_FROM not in bins:
            raise TokbinError(f"{path}: download.holdout draws {HOLDOUT_BIN}.bin from the "
                              f"{HOLDOUT_FROM!r} bin, but download.splits has no {HOLDOUT_FROM!r}"
                              f" ({', '.join(bins)}); add it")
        if HOLDOUT_BIN in bins:
            others = [b for b in download.splits if b != HOLDOUT_BIN]
            raise TokbinError(f"{path}: download.holdout draws {HOLDOUT_BIN}.bin from "
                              f"{HOLDOUT_FROM}, so download.splits must not also read a "
                              f"{HOLDOUT_BIN!r} split: set download.splits: [{', '.join(others)}]"
                              " (or download.holdout: null to read the dataset's own)")
    if download.separator is not None:
        if "\n" in download.separator or "\r" in download.separator:
            raise TokbinError(f"{path}: download.separator {download.separator!r} is matched "
                              "against whole lines, so it cannot hold a line break")
        if download.sample_by not in (None, "line"):
            raise TokbinError(f"{path}: download.separator decides the documents of .txt "
                              f"files, so download.sample_by ({download.sample_by}) does not "
                              "apply: set download.sample_by: line, or download.separator: null")
