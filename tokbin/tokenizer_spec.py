"""tokenize.encoding resolved to the tokenizer that encodes: its kind, its file, its commit.

`resolve_tokenizer` runs once, in the process that starts the work and before any worker, so a
bad setting fails there, naming the params key to change. Its `TokenizerSpec` is what every
worker loads (tokbin.vocab). tokenize.encoding is one of:

- a tiktoken encoding name (gpt2, cl100k_base, ...);
- ``hf:<model id>`` or ``hf:<model id>@<revision>``: the Hub model's tokenizer.json, fetched at
  the commit the revision (default main) names; meta.json records that commit;
- the path of a tokenizer file inside the tracked folder (``tokenizers/``), its kind read from
  its content (tokbin.tokenizer_files). dvc.yaml cannot make a stage depend on a path that a
  param names (short of templating), so the tokenize stage depends on the folder the file
  must be in: a changed file reruns tokenize, and an unchanged one reruns nothing.

A tiktoken rank file needs its split regex (tokenize.pattern) and special tokens
(tokenize.special_tokens), each given or a preset; the other kinds carry their own and refuse
both keys.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.format import RANK_FILE, TIKTOKEN, TOKENIZER_JSON, HubFile
from tokbin.tokenizer_files import read_file, sha256_of, sniff_kind

KEY = "tokenize.encoding"
HUB_FILE = "tokenizer.json"        # what an hf: id names in the model repo
HUB_CONFIG = "tokenizer_config.json"  # its eos_token is the default eot_token, when present
_HUB_ID = re.compile(r"hf:([A-Za-z0-9][\w.-]*(?:/[\w.-]+)?)(?:@([^\s@]+))?")

# Llama 3's split regex (llama-models, llama3/api/tokenizer.py). Llama 4's is o200k_base's.
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# o200k_base's, as tiktoken has it (a test checks): kept here, so knowing it loads no vocabulary
O200K_PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}", r" ?[^\s\p{L}\p{N}]+[\r\n/]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"])
PATTERN_PRESETS = {"llama3": LLAMA3_PATTERN}  # and every tiktoken encoding name
SPECIAL_TOKEN_PRESETS = ("llama3",)


@dataclass(frozen=True)
class TokenizerSpec:
    """What decides the ids, as resolved: the same spec gives the same ids in every worker."""
    encoding: str                 # tokenize.encoding as given
    kind: str                     # tokbin.format's TOKENIZER_KINDS
    file: str | None = None       # as meta.json records it: the path given, or the repo's name
    path: str | None = None       # the file to load, absolute
    sha256: str | None = None     # of the file's bytes: a worker loading other bytes stops
    hub: HubFile | None = None
    pattern: str | None = None    # a rank file's split regex, or a preset's name
    special_tokens: str | tuple[tuple[str, int], ...] | None = None  # a preset name, or pairs
    eot_token: str | None = None  # tokenize.eot_token (None: the tokenizer's own)
    config_eos: str | None = None  # a Hub model's tokenizer_config.json eos_token


def special_token_pairs(special_tokens: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """tokenize.special_tokens as a spec holds it: (text, id) pairs in id order."""
    return tuple(sorted(special_tokens.items(), key=lambda item: item[1]))


def resolve_tokenizer(encoding: str, eot_token: str | None = None, pattern: str | None = None,
                      special_tokens: str | dict[str, int] | None = None,
                      tracked_folder: Path | None = None) -> TokenizerSpec:
    """The tokenizer tokenize.encoding names, with the keys its kind needs; a local file must be
    inside `tracked_folder` when one is given (the stage gives the folder dvc.yaml tracks)."""
    if encoding.startswith("hf:"):
        spec = _from_hub(encoding)
    elif _is_path(encoding):
        spec = _from_file(encoding, tracked_folder)
    else:
        spec = TokenizerSpec(encoding, TIKTOKEN)
    pairs = (special_token_pairs(special_tokens) if isinstance(special_tokens, dict)
             else special_tokens)
    _check_kind_keys(spec, pattern, pairs)
    return TokenizerSpec(**{**spec.__dict__, "pattern": pattern, "special_tokens": pairs,
                            "eot_token": eot_token})


def _is_path(encoding: str) -> bool:
    import tiktoken
    if encoding in tiktoken.list_encoding_names():
        return False
    if "/" in encoding or os.sep in encoding or Path(encoding).exists() or "." in encoding:
        return True
    raise TokbinError(f"unknown tiktoken encoding {encoding!r}; set {KEY} to one of "
                      f"{', '.join(tiktoken.list_encoding_names())}, to hf:<model id> (a Hub "
                      "model's tokenizer.json), or to the path of a tokenizer file in "
                      "tokenizers/")


def _from_file(encoding: str, tracked_folder: Path | None) -> TokenizerSpec:
    path = Path(os.path.abspath(encoding))  # not resolve(): a DVC-cached file is a symlink
    if tracked_folder is not None:
        folder = Path(os.path.abspath(tracked_folder))
        if not path.is_relative_to(folder):
            raise TokbinError(
                f"{KEY}: {encoding} is not inside {tracked_folder}/, the folder the tokenize "
                "stage depends on (dvc.yaml), so DVC would not rerun tokenize when the file "
                f"changes; copy it there (cp {encoding} {tracked_folder}/) and set {KEY}: "
                f"{Path(tracked_folder, Path(encoding).name).as_posix()}")
    data = read_file(path, KEY)
    kind = sniff_kind(data, Path(encoding), KEY)
    given = Path(os.path.relpath(path)) if path.is_relative_to(Path.cwd()) else path
    return TokenizerSpec(encoding, kind, file=given.as_posix(), path=str(path),
                         sha256=sha256_of(data))


def hub_id(encoding: str) -> tuple[str, str]:
    """(model id, revision) of an hf: encoding; the revision defaults to main."""
    match = _HUB_ID.fullmatch(encoding)
    if match is None:
        raise TokbinError(f"{KEY}: {encoding!r} is not hf:<model id>[@<revision>], e.g. "
                          "hf:HuggingFaceTB/SmolLM2-135M or hf:HuggingFaceTB/SmolLM2-135M@main")
    return match.group(1), match.group(2) or "main"


def check_tokenizer_offline(encoding: str, eot_token: str | None = None,
                            pattern: str | None = None,
                            special_tokens: str | dict[str, int] | None = None,
                            tracked_folder: Path | None = None) -> TokenizerSpec | None:
    """What can be checked of the tokenizer settings without the network: everything for a
    tiktoken name or a local file (the spec, to load), the form of an hf: id (None: the Hub
    resolves the rest, in the tokenize stage)."""
    if not encoding.startswith("hf:"):
        return resolve_tokenizer(encoding, eot_token, pattern, special_tokens, tracked_folder)
    hub_id(encoding)
    _check_kind_keys(TokenizerSpec(encoding, TOKENIZER_JSON), pattern, special_tokens)
    return None


def _from_hub(encoding: str) -> TokenizerSpec:
    from tokbin.hub import fetch_model_file, resolve_model
    repo, revision = hub_id(encoding)
    sha, names = resolve_model(repo, revision)
    if HUB_FILE not in names:
        raise TokbinError(f"{KEY}: Hub model {repo} has no {HUB_FILE} at {revision} "
                          f"({sha[:12]}); its files: {', '.join(sorted(names)[:20]) or 'none'}. "
                          "For another tokenizer file, save it in tokenizers/ and set "
                          f"{KEY} to its path")
    path = fetch_model_file(repo, sha, HUB_FILE)
    data = read_file(path, KEY)
    kind = sniff_kind(data, Path(f"{repo}/{HUB_FILE}"), KEY)
    config_eos = None
    if HUB_CONFIG in names:
        config_eos = _eos_token(read_file(fetch_model_file(repo, sha, HUB_CONFIG), KEY))
    return TokenizerSpec(encoding, kind, file=HUB_FILE, path=str(path), sha256=sha256_of(data),
                         hub=HubFile(repo, revision, sha), config_eos=config_eos)


def _eos_token(config: bytes) -> str | None:
    """tokenizer_config.json's eos_token: a string, or an AddedToken-like {"content": ...}."""
    try:
        eos = json.loads(config).get("eos_token")
    except (ValueError, AttributeError):
        return None
    eos = eos.get("content") if isinstance(eos, dict) else eos
    return eos if isinstance(eos, str) and eos else None


def _check_kind_keys(spec: TokenizerSpec, pattern, special_tokens) -> None:
    if spec.kind == RANK_FILE:
        if pattern is None:
            raise TokbinError(
                f"tokenize.pattern is required: {spec.encoding} is a tiktoken rank file, which "
                "holds no split regex; set tokenize.pattern to the model's (a preset: "
                f"{', '.join(_pattern_presets())}; Llama 4 uses o200k_base's)")
        if isinstance(special_tokens, str) and special_tokens not in SPECIAL_TOKEN_PRESETS:
            raise TokbinError(f"tokenize.special_tokens {special_tokens!r} is not a preset "
                              f"({', '.join(SPECIAL_TOKEN_PRESETS)}); give the model's special "
                              "tokens as a mapping {text: id}")
        return
    what = {TIKTOKEN: "a tiktoken encoding with its own pattern and special tokens",
            TOKENIZER_JSON: "a tokenizer.json, which holds its own pre-tokenizer and special "
                            "tokens"}.get(spec.kind, "a SentencePiece model, which holds its own "
                                                     "special pieces")
    for key, value in (("pattern", pattern), ("special_tokens", special_tokens)):
        if value is not None:
            raise TokbinError(f"tokenize.{key} applies to tiktoken rank files only; "
                              f"{spec.encoding} is {what}: set tokenize.{key}: null")


def _pattern_presets() -> list[str]:
    import tiktoken
    return [*PATTERN_PRESETS, *tiktoken.list_encoding_names()]
