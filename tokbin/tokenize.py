"""The tokenize stage's work: every split of data/raw into a compact bin and its doclens.

For each bin, an executor (tokbin.executors: threads or worker processes; or
tokbin.ray_executor) reads the data files of its dataset split with the dataset's reader
(tokbin.readers), from data/raw or, when source.json streams them, from their source, each
first checked against its record (tokbin.remote), and encodes them (tokbin.encode) into
``<bin>.bin`` and ``<bin>.doclens`` (tokbin.format); with a holdout, the train split's pass
writes ``validation.bin`` too.
meta.json describes them. Every executor gives the same bytes.
"""
from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from tokbin.encode import settings_for
from tokbin.errors import NotUTF8Error, TokbinError
from tokbin.executors import (ProcessExecutor, ThreadExecutor, default_workers, text_bytes,
                              worth_processes)
from tokbin.format import (HOLDOUT_BIN, HOLDOUT_FROM, Holdout, Meta, SourceRecord, SplitInfo,
                           bin_splits, doclens_file, read_source, write_meta)
from tokbin.tokenizer_spec import TokenizerSpec, resolve_tokenizer
from tokbin.fsio import atomic_path
from tokbin.readers import (DataFile, Reading, check_columns, count_documents,
                            locate_not_utf8, use_lean_arrow_memory)
from tokbin.remote import map_files, record_file, verify
from tokbin.split_writer import SplitJob, SplitOutput


def tokenize_dataset(raw_dir: Path, out_dir: Path, splits: list[str] | dict[str, str],
                     text_column: str, encoding: str | TokenizerSpec, eot: str,
                     engine: str = "reference", workers: int | None = None,
                     executor: str = "local", *, sample_by: str | None = None,
                     separator: str | None = None, holdout: Holdout | None = None) -> Meta:
    """Tokenizes every split of a downloaded dataset into `out_dir` (bins, doclens, meta.json),
    with the tokenizer resolved from tokenize.encoding (or an encoding name, resolved here).

    `splits`: bin names, or {bin name: dataset split}. `sample_by` and `separator` choose the
    documents of .txt files; `holdout` draws validation from train. `out_dir` appears whole
    or not at all. executor "local" runs worker processes for large parquet datasets and
    threads otherwise; "ray" runs Ray tasks. All give the same output.
    """
    tokenizer = encoding if isinstance(encoding, TokenizerSpec) else resolve_tokenizer(encoding)
    workers = workers or default_workers()
    use_lean_arrow_memory()
    source = read_source(raw_dir)
    reading = reading_for(source, text_column, sample_by, separator)
    plan = _plan(source, raw_dir, splits, reading, holdout)
    files = [f for split_files, _, _ in plan.values() for f in split_files]  # the run reads
    size = None if executor == "ray" else text_bytes(files, reading)
    settings = settings_for(tokenizer, eot, engine, size)
    split_infos = {}
    with atomic_path(out_dir) as tmp, ExitStack() as stack:
        chosen = _choose_executors(executor, settings, workers, plan, files, size, reading,
                                   stack)
        from tqdm.auto import tqdm  # imported while the executor loads the encoder

        info = next(iter(chosen.values())).encoding_info()
        tmp.mkdir(parents=True)
        for name, (files, drawn, bins) in plan.items():
            job = SplitJob(files, reading,
                           [SplitOutput(tmp / f"{b}.bin", tmp / doclens_file(b)) for b in bins],
                           drawn)
            known = map_files(lambda file: count_documents(file, reading), files)
            total = None if None in known else sum(known)
            with tqdm(total=total, desc=f"tokenize {name}", unit="doc", unit_scale=True,
                      mininterval=1.0) as bar:
                try:
                    counts = chosen[name].tokenize_split(job, info, bar.update)
                except NotUTF8Error as e:  # the engines know no file: read the split again
                    where = locate_not_utf8(files, reading)
                    raise (NotUTF8Error(f"{where}: {e}") if where else e) from None
            for bin_name, count in zip(bins, counts):
                if count.documents == 0:
                    raise _empty(bin_name, source, splits, holdout, counts)
                split_infos[bin_name] = SplitInfo(f"{bin_name}.bin", count.tokens,
                                                  count.documents,
                                                  count.tokens * np.dtype(info.dtype).itemsize,
                                                  count.crc32,
                                                  doclens_crc32=count.doclens_crc32)
        meta = Meta(encoding=tokenizer.encoding, n_vocab=info.n_vocab,
                    eot_token=info.eot_token, eot=eot, dtype=info.dtype, source=source.source,
                    splits=split_infos, holdout=holdout, tokenizer=info.tokenizer)
        write_meta(tmp, meta)
    return meta


def reading_for(source: SourceRecord, text_column: str, sample_by: str | None,
                separator: str | None) -> Reading:
    """How the downloaded files are read: their reader's options from the dataset's config,
    with download.sample_by (when set, it wins, as load_dataset's `sample_by=` does) and
    download.separator for .txt files."""
    options = dict(source.reader_options)
    if source.builder == "text":
        if sample_by is not None and options.get("sample_by") not in (None, sample_by):
            print(f"tokenize: download.sample_by: {sample_by} overrides config "
                  f"{source.config!r}'s sample_by: {options['sample_by']} (set it to null to "
                  "follow the config)", file=sys.stderr)
        options.update({key: value for key, value in
                        (("sample_by", sample_by), ("separator", separator))
                        if value is not None})
    elif sample_by not in (None, "line") or separator is not None:
        raise TokbinError(f"download.sample_by and download.separator choose the documents of "
                          f".txt files, but {source.dataset} is read as {source.builder}: set "
                          "download.sample_by: line and download.separator: null")
    return Reading(source.builder, text_column, options)


def _plan(source: SourceRecord, raw_dir: Path, splits: list[str] | dict[str, str],
          reading: Reading, holdout: Holdout | None
          ) -> dict[str, tuple[list[DataFile], Holdout | None, list[str]]]:
    """Per bin read from the dataset: its files, its holdout and the bins its pass writes
    (with a holdout, train's writes validation too); every file checked before any work."""
    bins = bin_splits(splits)
    plan = {}
    for bin_name, split in bins.items():
        if source.splits.get(bin_name) != split:
            raise TokbinError(f"bin {bin_name!r} (dataset split {split!r}) was not downloaded "
                              f"(data/raw holds {source.splits}, bin: split); run `dvc repro` "
                              "to download it")
        files = [record_file(source, raw_dir, name) for name in source.files[split]]
        verify(files)
        map_files(lambda file: check_columns(file, reading), list(dict.fromkeys(files)))
        drawn = holdout if bin_name == HOLDOUT_FROM else None
        plan[bin_name] = (files, drawn, [bin_name] + ([HOLDOUT_BIN] if drawn else []))
    return plan


def _empty(bin_name: str, source: SourceRecord, splits, holdout: Holdout | None,
           counts) -> TokbinError:
    if holdout is not None and bin_name == HOLDOUT_BIN:
        return TokbinError(f"download.holdout (fraction {holdout.fraction}) drew none of the "
                           f"{counts[0].documents:,} train documents into {HOLDOUT_BIN}.bin; "
                           "raise download.holdout.fraction")
    split = source.splits.get(bin_name, HOLDOUT_FROM)
    return TokbinError(f"split {bin_name!r} is empty (no documents in "
                       f"{', '.join(source.files[split])}); remove it from download.splits or "
                       "fix the dataset")


def _choose_executors(executor: str, settings, workers: int, plan: dict,
                      files: list[DataFile], size: int | None, reading: Reading,
                      stack: ExitStack) -> dict:
    """The executor of each bin's pass: Ray's with executor "ray"; else worker processes for
    a dataset (`files`, of `size` bytes of text) large enough to pay for their start, and
    threads for the rest."""
    if executor == "ray":
        from tokbin.ray_executor import RayExecutor
        chosen = stack.enter_context(RayExecutor(settings, workers))
    elif workers > 1 and worth_processes(files, reading, workers, size):
        chosen = stack.enter_context(ProcessExecutor(settings, workers))
    else:
        chosen = stack.enter_context(ThreadExecutor(settings, workers))
    return dict.fromkeys(plan, chosen)
