"""Everything the stages would refuse in params.yaml and dvc.yaml, checked before DVC deletes
anything.

DVC deletes a stage's outputs just before it runs the stage's command, so a bad value that
only the stage itself finds costs the outputs it had. The `check` stage runs `check_pipeline`
first in every `dvc repro` and `dvc exp run` (every other stage depends on its output, whose
bytes are the same whenever the checks pass, so it never makes another stage rerun), with the
same messages the stages give. What it cannot know without the network, the data or a
dataset library (a dataset's splits and columns, which the download stage resolves with
Hugging Face datasets, nulls in the text) is still the stages' to find.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from tokbin.binarize import binarize_stage, check_llmc_shard_tokens, check_outputs
from tokbin.engines import check_engine
from tokbin.errors import TokbinError
from tokbin.format import SENTENCEPIECE, TOKENIZER_JSON, choose_dtype
from tokbin.params import Params, load_params
from tokbin.ray_executor import RAY_MISSING
from tokbin.location import dataset_location
from tokbin.tokenizer_spec import check_tokenizer_offline
from tokbin.vocab import load_vocabulary

OK_TEXT = "params.yaml and dvc.yaml passed tokbin's checks\n"


def check_pipeline(params_path: Path = Path("params.yaml"), dvc_yaml: Path = Path("dvc.yaml"),
                   tokenizers: Path | None = None) -> Params:
    """The checked params; a TokbinError naming the key and the fix otherwise. dvc.yaml is read
    as params.yaml is, not as a dependency (DVC allows none on its own files): a change to its
    binarize command alone reruns the binarize stage, which checks its command and outs
    itself. `tokenizers`: the folder a local tokenizer file must be in (the check and tokenize
    stages depend on it)."""
    params = check_params(load_params(params_path), tokenizers)
    bins, outs = binarize_stage(dvc_yaml)
    check_outputs(bins, params.download.written_bins, params.binarize.shard_tokens, outs)
    return params


def check_params(params: Params, tokenizers: Path | None) -> Params:
    """check_pipeline's checks of params.yaml alone: the first problem, as a TokbinError."""
    problems = params_problems(params, tokenizers)
    if problems:
        raise TokbinError(problems[0])
    return params


def params_problems(params: Params, tokenizers: Path | None) -> list[str]:
    """What check_params refuses, each independent check's own (`python -m tokbin set` runs
    them, telling an edit's new problem from one the file had already; the dvc.yaml outs that
    a new shard_tokens or split needs are edited after it)."""
    checks = (lambda: _check_dataset(params), lambda: _check_tokenizer(params, tokenizers),
              lambda: _check_executor(params))
    problems = []
    for check in checks:
        try:
            check()
        except TokbinError as e:
            problems.append(str(e))
    return problems


def _check_dataset(params: Params) -> None:
    download = params.download  # a local dataset's folder exists, a bucket's client is here
    dataset_location(download.dataset, download.revision, download.materialize)


def _check_tokenizer(params: Params, tokenizers: Path | None) -> None:
    tokenize = params.tokenize
    spec = check_tokenizer_offline(tokenize.encoding, tokenize.eot_token, tokenize.pattern,
                                   tokenize.special_tokens, tokenizers)
    binarize = params.binarize
    dtype = binarize.dtype
    if spec is not None:
        vocabulary = load_vocabulary(spec)  # its kind loads, with what it needs beyond its file
        check_engine(tokenize.engine, spec)
        if spec.kind in (TOKENIZER_JSON, SENTENCEPIECE):  # a special token may share an id
            check_eot_is_not_text(vocabulary)
        dtype = choose_dtype(dtype, vocabulary.n_vocab)  # an explicit dtype holds every id
    if binarize.format == "llmc":  # "auto" without the vocabulary: the larger, uint32 limit
        check_llmc_shard_tokens("uint32" if dtype == "auto" else dtype, binarize.shard_tokens)


def _check_executor(params: Params) -> None:
    if params.tokenize.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise TokbinError(RAY_MISSING)


def check_eot_is_not_text(vocabulary) -> None:
    """Refuses an end-of-text token whose own text encodes to its id: documents holding that
    text would hold document ends (the tokenize stage stops on them, after DVC deleted its
    output)."""
    name, eot = vocabulary.eot_name, vocabulary.eot_id
    if list(vocabulary.reference_engine().encode_ordinary(name)) == [eot]:
        raise TokbinError(f"tokenize.eot_token {name!r} has the id {eot}, which the text {name!r} "
                          "encodes to as well, so documents holding it would read as ending "
                          "there; set tokenize.eot_token to a special token text cannot produce")


def exp_run_hint() -> str:
    """What to add to a message when `dvc exp run -S` wrote the bad value into params.yaml."""
    if os.environ.get("DVC_EXP_BASELINE_REV"):  # DVC sets it for the stages of an exp run
        # DVC 3.67 also leaves git's index believing params.yaml unchanged: touch it first
        return (" (`dvc exp run -S` has written it into params.yaml, where `git status` does "
                "not show it until the file is touched: `touch params.yaml && git checkout "
                "params.yaml` undoes it)")
    return ""
