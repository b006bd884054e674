"""What every tokbin file shares: the format's names and constants, and the strict parsing of
its JSON files (a missing, unknown or ill-typed field is an error, so a reader never guesses)."""
from __future__ import annotations

import json

import numpy as np

from tokbin import schema
from tokbin.errors import TokbinError

FORMAT_NAME = "tokbin"
FORMAT_VERSION = 5
# 2 added crc32, 3 "tokenizer", 4 bin_format and the index, 5 the index's docs_crc32
READS_VERSIONS = (1, 2, 3, 4, 5)
META_FILENAME = "meta.json"
SOURCE_FILENAME = "source.json"
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
DOCLENS_DTYPE = np.dtype("<u4")
EOT_POLICIES = ("append", "prepend", "none")
BIN_FORMATS = ("nanogpt", "llmc")
DOCS_DTYPE = np.dtype("<i8")
LLMC_HEADER_BYTES = 1024  # 256 int32
LLMC_VARIANTS = {"uint16": (20240520, 1), "uint32": (20240801, 7)}  # dtype: (magic, version)
INT32_MAX = 2**31 - 1
REBUILD = "rebuild it with `dvc repro`"
REPAIR = ("run `python -m tokbin repair`: it restores every damaged output from the DVC remote, "
          "or says which `dvc repro` rebuilds it")
# tokenizer.kind: what tokenize.encoding named, told apart by content (tokbin.tokenizer_files)
TIKTOKEN = "tiktoken"              # a tiktoken encoding name (no file)
RANK_FILE = "tiktoken_rank_file"
TOKENIZER_JSON = "tokenizer_json"
SENTENCEPIECE = "sentencepiece"
TOKENIZER_KINDS = (TIKTOKEN, RANK_FILE, TOKENIZER_JSON, SENTENCEPIECE)


def load_json(text: str, where: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise TokbinError(f"{where} is not valid JSON ({e}); {REBUILD} or restore it with "
                          "`dvc pull`") from None


def exact_fields(raw, cls, where: str, header: dict | None = None) -> dict:
    """`raw` checked to be a JSON object with exactly `cls`'s fields (and `header`'s)."""
    if not isinstance(raw, dict):
        raise TokbinError(f"{where} must be a JSON object, got {type(raw).__name__}")
    unknown, missing = schema.key_differences(raw, cls, header)
    if unknown or missing:
        raise TokbinError(f"{where}: unknown fields {unknown}, missing fields {missing}; it was "
                          f"not written by this version of tokbin: {REBUILD}")
    for key, hint in {**schema.fields_of(cls), **(header or {})}.items():
        if key in raw and not schema.matches(raw[key], hint):
            raise TokbinError(f"{where}: field {key!r} has the wrong type ({raw[key]!r})")
    return raw


def parse_object(raw, cls, where: str):
    """A nested object of `cls`'s exact fields, built (its own checks run)."""
    fields = exact_fields(raw, cls, where)
    try:
        return cls(**fields)
    except TokbinError as e:
        raise TokbinError(f"{where}: {e}") from None
