"""Which data files a dataset's splits are, exactly as Hugging Face `datasets` resolves them.

`resolve_files` asks `datasets.load_dataset_builder` (the first half of `load_dataset`): README
``configs:`` (subsets, per-split globs, ``default: true``, ``data_dir``), split names in file
and folder names, the default config, user ``data_files``, and the reader it would use with
its options. Nothing else of datasets runs: no data is read or prepared, and no dataset script
or other remote code is run (datasets 5 refuses scripts; `.zip` data files, which it would
open to look inside, are refused first). Only the download stage imports this module:
importing datasets costs seconds.

For a Hub dataset the caller passes the commit sha it resolved, so every listing is at that
commit. Nothing is left behind: the README and datasets' lock files go to a temporary cache,
and no download-count or dataset-viewer request leaves for anywhere but the Hub.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import yaml

from tokbin.errors import TokbinError
from tokbin.format import READERS

SUPPORTED_FILES = (".parquet, .arrow, .jsonl/.json/.ndjson, .csv/.tsv, .txt (the text ones also "
                   "as .gz, .bz2, .xz or .zst)")
# Config fields that do not change which documents a reader gives.
_NOT_READER_OPTIONS = {"name", "version", "data_dir", "data_files", "description", "features",
                       "chunksize", "batch_size", "block_size", "use_threads", "on_mixed_types",
                       "parse_agent_traces", "fragment_scan_options"}
# The options tokbin's readers implement, per reader (csv: every pandas.read_csv argument).
_HONOURED = {"parquet": {"columns"}, "arrow": set(),
             "json": {"field", "encoding", "encoding_errors"},
             "text": {"sample_by", "keep_linebreaks", "encoding", "encoding_errors"}}


@dataclasses.dataclass(frozen=True)
class Resolution:
    config: str                      # the config (subset) read
    builder: str                     # the reader: parquet | json | csv | text | arrow
    options: dict[str, object]       # its options (csv: the pandas.read_csv arguments)
    files: dict[str, list[str]]      # split -> paths relative to the dataset, in reading order


def resolve_files(dataset: str, root: Path | None, sha: str | None, config: str | None,
                  data_files: dict[str, list[str]] | None) -> Resolution:
    """The splits and files of `load_dataset(dataset, config, data_files=...)`: a local
    directory `root` (absolute), or, with `root` None, Hub dataset `dataset` at commit `sha`."""
    from datasets import load_dataset_builder

    if root is not None:
        path, prefix = root.as_posix(), root.as_posix() + "/"
    else:
        path, prefix = f"hf://datasets/{dataset}", f"hf://datasets/{dataset}@{sha}/"
    tmp = Path(tempfile.mkdtemp(prefix="tokbin-resolve-"))
    try:
        with _quiet_datasets(tmp), _datasets_errors(dataset, sha, prefix, data_files):
            builder = load_dataset_builder(path, config, data_files=data_files,
                                           revision=sha, cache_dir=str(tmp / "datasets"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if builder.name not in READERS:
        raise TokbinError(f"{dataset}: its data files are read by datasets' {builder.name!r} "
                          f"builder, which tokbin does not read; supported: {SUPPORTED_FILES} "
                          "(set download.data_files to files of one of these types)")
    files = {}
    for split, urls in builder.config.data_files.items():
        names = [_relative(url, prefix, dataset) for url in urls]
        if not names:  # a README config's glob matched nothing: datasets gives an empty split
            raise TokbinError(f"{dataset}: split {str(split)!r} of config "
                              f"{builder.config.name!r} matches no data file")
        files[str(split)] = names
    return Resolution(builder.config.name, builder.name,
                      _reader_options(builder.name, builder.config, dataset), files)


def _relative(url: str, prefix: str, dataset: str) -> str:
    if "::" in url:
        raise TokbinError(f"{dataset}: {url} is a file inside an archive; tokbin reads plain "
                          f"or compressed data files only ({SUPPORTED_FILES})")
    name = url[len(prefix):]
    # `..` parts: a name that leaves the dataset while its text starts with the prefix
    if not url.startswith(prefix) or posixpath.normpath(name).split("/")[0] == "..":
        raise TokbinError(f"{dataset}: data file {url} is outside the dataset; "
                          "download.data_files must name files inside it")
    return name


def _reader_options(builder: str, config, dataset: str) -> dict[str, object]:
    """The options that change which documents the reader gives: for csv the pandas.read_csv
    arguments datasets passes, for the others those of the config's options tokbin reads with;
    an option it cannot honour is an error rather than silently ignored."""
    if builder == "csv":
        options = dict(config.pd_read_csv_kwargs)
        bad = {k: v for k, v in options.items() if not isinstance(v, (str, int, float, bool,
                                                                       list, type(None)))}
    else:
        defaults = type(config)()
        options = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                   if f.name not in _NOT_READER_OPTIONS}
        bad = {k: v for k, v in options.items()
               if k not in _HONOURED[builder] and v != getattr(defaults, k)}
        options = {k: v for k, v in options.items() if k in _HONOURED[builder]}
    if bad:
        name, value = next(iter(bad.items()))
        raise TokbinError(f"{dataset}: its config {config.name!r} sets the {builder} option "
                          f"{name}={value!r}, which tokbin's reader does not implement; pick "
                          "another config, or name the files in download.data_files")
    return options


@contextlib.contextmanager
def _quiet_datasets(tmp: Path) -> Iterator[None]:
    """datasets and huggingface_hub settings for a resolution without side effects, restored
    afterwards: no download-count request (to s3.amazonaws.com) or dataset-viewer request,
    README & co in a temporary hub cache (HF_HOME, where the token is, untouched), no
    progress bars, and .zip data files refused before datasets opens them."""
    import datasets
    import datasets.load as load_module
    import huggingface_hub.constants as hub_constants

    saved = (datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, datasets.config.USE_PARQUET_EXPORT,
             hub_constants.HF_HUB_CACHE, load_module.infer_module_for_data_files_list_in_archives)
    loggers = [logging.getLogger(n) for n in ("huggingface_hub.repocard", "datasets")]
    levels = [log.level for log in loggers]
    bars = datasets.utils.are_progress_bars_disabled()

    def no_archives(data_files_list, download_config=None):
        raise TokbinError(f"the data files are .zip archives ({data_files_list[0]}, ...), which "
                          f"tokbin does not read; supported: {SUPPORTED_FILES}")

    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    datasets.config.USE_PARQUET_EXPORT = False
    hub_constants.HF_HUB_CACHE = str(tmp / "hub")
    load_module.infer_module_for_data_files_list_in_archives = no_archives
    for log in loggers:
        log.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        (datasets.config.HF_UPDATE_DOWNLOAD_COUNTS, datasets.config.USE_PARQUET_EXPORT,
         hub_constants.HF_HUB_CACHE, load_module.infer_module_for_data_files_list_in_archives
         ) = saved
        for log, level in zip(loggers, levels):
            log.setLevel(level)
        if not bars:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _datasets_errors(dataset: str, sha: str | None, prefix: str,
                     data_files: dict[str, list[str]] | None) -> Iterator[None]:
    """datasets' errors about configs, splits and files in terms of tokbin's params; the
    Hub's own (unreachable, gated...) as tokbin.hub words them."""
    from datasets.exceptions import DatasetNotFoundError

    from tokbin import hub
    with hub.hub_errors(dataset, sha or ""):
        try:
            yield
        except DatasetNotFoundError as e:
            raise TokbinError(f"{dataset}: {e}") from None
        except FileNotFoundError as e:  # datasets' DataFilesNotFoundError, EmptyDatasetError
            raise _files_error(str(e), dataset, prefix, data_files) from None
        except (ValueError, RuntimeError) as e:
            raise _config_error(str(e), dataset, data_files) from None
        except yaml.YAMLError as e:  # the README's metadata header
            raise TokbinError(f"{dataset}: the YAML header of its README.md does not parse "
                              f"({_first_line(str(e))}); fix it, or remove its configs and "
                              "name the files in download.data_files") from None


def _first_line(msg: str) -> str:
    return next((line.strip() for line in msg.splitlines() if line.strip()), "no message")


def _config_error(msg: str, dataset: str, data_files: dict[str, list[str]] | None
                  ) -> TokbinError:
    if msg.startswith("BuilderConfig '") and "not found. Available:" in msg:
        name = msg.split("'")[1]
        available = msg.split("Available: ", 1)[1].split("\n")[0]
        return TokbinError(f"download.config {name!r} is not a config of {dataset}; its configs "
                           f"are {available}: set download.config to one of them (null: the "
                           "dataset's default)")
    if msg.startswith("Config name is missing."):
        available = msg.split("available configs: ", 1)[1].split("\n")[0]
        return TokbinError(f"{dataset} has several configs and no default; set download.config"
                           f" to one of {available}")
    if msg.startswith("Couldn't infer the same data file format for all splits"):
        # "... Got {NamedSplit('train'): ('parquet', {}), 'test': (None, {})}": None = no file
        empty = re.findall(r"'([^']+)'\)?: \(None, \{\}\)", msg)
        if empty:
            return _no_match(empty[:1], data_files, "file", dataset)
        kinds = dict(re.findall(r"'([^']+)'\)?: \('(\w+)'", msg))
        return TokbinError(f"{dataset}: its splits hold different file types ("
                           f"{', '.join(f'{k}: {v}' for k, v in kinds.items())}); set "
                           "download.data_files to files of one type")
    if msg.startswith("Dataset scripts are no longer supported"):
        return TokbinError(f"{dataset} is a dataset script repository; tokbin never runs "
                           "dataset code: set download.revision: refs/convert/parquet (the "
                           "Hub's parquet export of it), or put its data files in a local "
                           "directory")
    if msg.startswith("Data files don't belong to"):
        return TokbinError(f"download.data_files must name files inside {dataset} ({msg})")
    return TokbinError(f"{dataset}: {_first_line(msg)}")


def _no_match(splits: list[str], data_files: dict[str, list[str]] | None, what: str,
              dataset: str) -> TokbinError:
    """download.data_files' globs of `splits` match no `what` in the dataset."""
    given = {split: data_files[split] for split in splits if split in (data_files or {})}
    globs = "; ".join((f"{split}: " if len(given) > 1 else "") + ", ".join(patterns)
                      for split, patterns in given.items())
    return TokbinError(f"download.data_files: the globs of split{'s' * (len(splits) > 1)} "
                       f"{' and '.join(map(repr, splits))} match no {what} in {dataset}"
                       f"{f' ({globs})' if globs else ''}; fix them (paths are relative to the "
                       f"dataset's root){_bracket_hint(given)}")


def _bracket_hint(given: dict[str, list[str]]) -> str:
    """For a glob holding `[`: datasets' globs (fsspec's, as Python's glob) read `[...]` as a
    character class, so a file name's own `[` matches only as `[[]` (the glob that escapes
    it, for the first such glob)."""
    bracketed = next((p for patterns in given.values() for p in patterns
                      if "[" in p and "[[]" not in p), None)
    if bracketed is None:
        return ""
    return ("; a glob's `[` opens a character class, as in datasets: write `[[]` for a `[` of "
            f"a file name ({bracketed.replace('[', '[[]')!r})")


def _files_error(msg: str, dataset: str, prefix: str, data_files: dict[str, list[str]] | None
                 ) -> TokbinError:
    missing = re.search(r"Unable to find '([^']+)'", msg)
    if missing:  # a data_files path without wildcards that is not there
        return TokbinError(f"download.data_files: {missing.group(1).removeprefix(prefix)!r} "
                           f"is not a file of {dataset}; fix the path (relative to the "
                           "dataset's root)")
    if data_files:  # datasets found nothing for any split: each split's globs matched nothing
        return _no_match(list(data_files), data_files,
                         f"data files of a supported type ({SUPPORTED_FILES})", dataset)
    return TokbinError(f"{dataset}: no data files of a supported type ({SUPPORTED_FILES}) "
                       "were found (by download.data_files, the README's configs, or the "
                       "Hub's file-name conventions)")
