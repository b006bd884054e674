"""The tokenize stage's work: every split of data/raw into a compact bin and its doclens.

For each split, an executor (tokbin.executors: threads or worker processes; or
tokbin.ray_executor) reads its data files and encodes them (tokbin.encode) into
``<split>.bin`` and ``<split>.doclens`` (tokbin.format); meta.json describes them. Every
executor gives the same bytes.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import numpy as np

from tokbin.encode import settings_for
from tokbin.errors import TokbinError
from tokbin.tokenizer_spec import TokenizerSpec, resolve_tokenizer
from tokbin.executors import ProcessExecutor, ThreadExecutor, default_workers, worth_processes
from tokbin.format import (Meta, SplitInfo, doclens_file, read_source, write_meta)
from tokbin.fsio import atomic_path
from tokbin.readers import check_text_column, count_documents, use_lean_arrow_memory


def tokenize_dataset(raw_dir: Path, out_dir: Path, splits: list[str], text_column: str,
                     encoding: str | TokenizerSpec, eot: str, engine: str = "reference",
                     workers: int | None = None, executor: str = "local") -> Meta:
    """Tokenizes every split of a downloaded dataset into `out_dir` (bins, doclens, meta.json),
    with the tokenizer resolved from tokenize.encoding (or an encoding name, resolved here).

    `out_dir` appears whole or not at all. executor "local" runs worker processes for large
    parquet datasets and threads otherwise; "ray" runs Ray tasks. All give the same output.
    """
    tokenizer = encoding if isinstance(encoding, TokenizerSpec) else resolve_tokenizer(encoding)
    from tqdm.auto import tqdm

    workers = workers or default_workers()
    use_lean_arrow_memory()
    source = read_source(raw_dir)
    files = {}
    for split in splits:
        if split not in source.files:
            raise TokbinError(f"split {split!r} was not downloaded (data/raw has "
                              f"{sorted(source.files)}); run `dvc repro` to download it")
        files[split] = [raw_dir / name for name in source.files[split]]
        for path in files[split]:
            check_text_column(path, text_column)
    settings = settings_for(tokenizer, eot, engine)
    split_infos = {}
    with atomic_path(out_dir) as tmp, ExitStack() as stack:
        chosen = _choose_executors(executor, settings, workers, files, stack)
        info = next(iter(chosen.values())).encoding_info()
        tmp.mkdir(parents=True)
        for split in splits:
            known = [count_documents(p) for p in files[split]]
            total = None if None in known else sum(known)
            with tqdm(total=total, desc=f"tokenize {split}", unit="doc", unit_scale=True,
                      mininterval=1.0) as bar:
                counts = chosen[split].tokenize_split(files[split], text_column,
                                                      tmp / f"{split}.bin",
                                                      tmp / doclens_file(split), info,
                                                      bar.update)
            if counts.documents == 0:
                raise TokbinError(f"split {split!r} is empty (no documents in "
                                  f"{', '.join(source.files[split])}); remove it from "
                                  "download.splits or fix the dataset")
            split_infos[split] = SplitInfo(f"{split}.bin", counts.tokens, counts.documents,
                                           counts.tokens * np.dtype(info.dtype).itemsize)
        meta = Meta(encoding=tokenizer.encoding, n_vocab=info.n_vocab,
                    eot_token=info.eot_token, eot=eot, dtype=info.dtype, source=source.source,
                    splits=split_infos, tokenizer=info.tokenizer)
        write_meta(tmp, meta)
    return meta


def _choose_executors(executor: str, settings, workers: int, files: dict[str, list[Path]],
                      stack: ExitStack) -> dict:
    """The executor of each split: Ray's for every split with executor "ray"; else worker
    processes for the parquet splits of a dataset large enough to pay for their start, and
    threads for the rest."""
    if executor == "ray":
        from tokbin.ray_executor import RayExecutor
        ray = stack.enter_context(RayExecutor(settings, workers))
        return dict.fromkeys(files, ray)
    every_file = [p for split_files in files.values() for p in split_files]
    large = workers > 1 and worth_processes(every_file)
    in_processes = {split: large and all(p.suffix == ".parquet" for p in split_files)
                    for split, split_files in files.items()}
    # Processes start first: the workers load the encoder while this process goes on.
    processes = (stack.enter_context(ProcessExecutor(settings, workers))
                 if any(in_processes.values()) else None)
    threads = (stack.enter_context(ThreadExecutor(settings, workers))
               if not all(in_processes.values()) else None)
    return {split: processes if in_processes[split] else threads for split in files}
