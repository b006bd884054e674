"""Every dataset `datasets.load_dataset` can load, tokbin builds: each repo shape of
tests/support/shapes.py, served by the session's fake Hub (or read from a local directory),
gives bins equal to the tiktoken encoding of the documents load_dataset returns for that
config and split, in order; and what cannot be built is refused with a message that says why
and what to set, before any output is left.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import tiktoken

from conftest import FAKE_HUB
from support import shapes
from support.fakehub import tree_of
from tokbin.errors import TokbinError
from tokbin.format import read_source
from tokbin.params import load_params
from tokbin.source import materialize
from tokbin.tokenize import tokenize_dataset

ENC = tiktoken.get_encoding("gpt2")
GPT4_FILES = {"train": ["TinyStoriesV2-GPT4-train.txt"],
              "validation": ["TinyStoriesV2-GPT4-valid.txt"]}


def repo_of(shape: str) -> str:
    return f"shapes/{shape.replace('_', '-')}"


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Every shape written once, and served by the fake Hub as shapes/<shape>."""
    folders = shapes.write_all(tmp_path_factory.mktemp("shapes"))
    for name, folder in folders.items():
        FAKE_HUB.add_commit(repo_of(name), tree_of(folder))
    return folders


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    """datasets.load_dataset on a local folder, with a cache of this module's own."""
    import datasets
    datasets.disable_progress_bars()
    cache = tmp_path_factory.mktemp("datasets-cache")
    return lambda folder, config=None, **kw: datasets.load_dataset(str(folder), config,
                                                                   cache_dir=str(cache), **kw)


def build(tmp_path: Path, dataset: str, splits, text_column: str = "text", config=None,
          data_files=None, **tokenize) -> dict[str, list[int]]:
    """download -> tokenize as the stages run them; each bin's ids."""
    raw, tokens = tmp_path / "raw", tmp_path / "tokens"
    raw.mkdir()
    materialize(dataset, "main", splits, text_column, raw, config=config, data_files=data_files)
    meta = tokenize_dataset(raw, tokens, splits, text_column, "gpt2", "append", workers=2,
                            **tokenize)
    return {name: np.fromfile(tokens / info.file, "<u2").tolist()
            for name, info in meta.splits.items()}


def encoded(texts: list[str]) -> list[int]:
    return [i for text in texts for i in (*ENC.encode_ordinary(text), ENC.eot_token)]


# (id, shape, where, build arguments, {bin: (load_dataset config, its split)})
CASES = [
    ("subset", "tinystories_ml", "hub",
     dict(config="de", splits={"train": "train", "validation": "test"}, text_column="story"),
     {"train": ("de", "train"), "validation": ("de", "test")}),
    ("default-subset", "tinystories_ml", "local",
     dict(splits={"train": "train", "validation": "test"}, text_column="story"),
     {"train": (None, "train"), "validation": (None, "test")}),
    ("nested-globs", "fineweb_edu", "hub", dict(config="sample-10BT", splits=["train"]),
     {"train": ("sample-10BT", "train")}),
    ("json-gz-configs", "c4", "hub", dict(splits=["train", "validation"]),
     {"train": (None, "train"), "validation": (None, "validation")}),
    ("csv-valid", "csv_valid", "hub", dict(splits=["train", "validation"]),
     {"train": (None, "train"), "validation": (None, "validation")}),
    ("folder-splits", "jsonl_folders", "local", dict(splits=["train", "validation"]),
     {"train": (None, "train"), "validation": (None, "validation")}),
    ("train-only", "train_only", "hub", dict(splits=["train"]), {"train": (None, "train")}),
    ("zst", "zst", "hub", dict(splits=["train", "validation"]),
     {"train": (None, "train"), "validation": (None, "validation")}),
]


@pytest.mark.parametrize("shape, where, arguments, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bins_hold_the_documents_load_dataset_returns(folders, load, tmp_path, shape, where,
                                                      arguments, expected):
    dataset = repo_of(shape) if where == "hub" else str(folders[shape])
    bins = build(tmp_path, dataset, **arguments)
    assert list(bins) == list(expected)
    column = arguments.get("text_column", "text")
    for bin_name, (config, split) in expected.items():
        documents = load(folders[shape], config)[split][column]
        assert bins[bin_name] == encoded(documents), bin_name


def test_tinystories_gpt4_txt_files_split_at_their_separator_lines(folders, load, tmp_path):
    bins = build(tmp_path, repo_of("gpt4_txt"), ["train", "validation"],
                 data_files=GPT4_FILES, separator=shapes.SEPARATOR)
    for split, stories in shapes.GPT4_STORIES.items():
        assert bins[split] == encoded(stories)
        whole = load(folders["gpt4_txt"], data_files=GPT4_FILES, sample_by="document")[split]
        assert whole["text"][0].split(f"\n{shapes.SEPARATOR}\n")[:-1] == stories


def test_only_the_configured_splits_files_are_fetched_and_recorded(folders, tmp_path):
    FAKE_HUB.requests.clear()
    raw = tmp_path / "raw"
    raw.mkdir()
    record = materialize(repo_of("fineweb_edu"), "main", ["train"], "text", raw,
                         config="sample-10BT")
    fetched = sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*.parquet"))
    assert fetched == [f"sample/10BT/{i:03d}_00000.parquet" for i in range(3)]
    assert read_source(raw) == record
    assert (record.config, record.sha, record.builder) == (
        "sample-10BT", FAKE_HUB.refs[repo_of("fineweb_edu")]["main"], "parquet")
    assert record.files == {"train": fetched}
    served = {r.rsplit("/", 1)[-1] for r in FAKE_HUB.requests if r.startswith("GET /datasets/")}
    assert served == {"README.md", "000_00000.parquet", "001_00000.parquet", "002_00000.parquet"}
    assert FAKE_HUB.unknown == []


def test_data_files_replace_the_configs_own_as_in_load_dataset(folders, load, tmp_path):
    files = {"train": ["en/train-1*", "en/train-1-*"], "validation": "en/test-*"}
    bins = build(tmp_path, repo_of("tinystories_ml"), ["train", "validation"],
                 text_column="story", data_files={k: [v] if isinstance(v, str) else v
                                                  for k, v in files.items()})
    expected = load(folders["tinystories_ml"], data_files=files)
    # overlapping globs read a file twice: load_dataset does too
    assert expected["train"]["story"][:3] == expected["train"]["story"][-3:]
    for split in ("train", "validation"):
        assert bins[split] == encoded(expected[split]["story"])


# --- what is refused, before any output ---------------------------------------------------

def refused(tmp_path: Path, dataset: str, splits, *fragments: str, text_column="text",
            config=None, data_files=None) -> str:
    raw = tmp_path / "raw"
    raw.mkdir(exist_ok=True)
    with pytest.raises(TokbinError) as error:
        materialize(dataset, "main", splits, text_column, raw, config=config,
                    data_files=data_files)
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, message
    assert ".tmp-" not in message and "tokbin-resolve" not in message
    return message


def test_an_unknown_config_lists_the_configs(folders, tmp_path):
    refused(tmp_path, repo_of("tinystories_ml"), ["train"], "download.config 'xx' is not a "
            "config of shapes/tinystories-ml", "['en', 'fr', 'de']", "set download.config",
            config="xx")


def test_a_missing_split_lists_the_splits_and_how_to_map_or_hold_out(folders, tmp_path):
    refused(tmp_path, repo_of("tinystories_ml"), ["train", "validation"], "has no split "
            "'validation'", "its splits are train, test",
            "download.splits: {train: train, validation: test}", text_column="story")
    refused(tmp_path, repo_of("train_only"), ["train", "validation"], "its splits are train",
            "download.splits: [train] and download.holdout: {fraction: 0.0005, seed: 2357}")


def test_data_files_matching_nothing_are_refused(folders, tmp_path):
    refused(tmp_path, repo_of("c4"), ["train", "validation"], "download.data_files",
            "split 'validation' match no file",
            data_files={"train": ["en/c4-train.*"], "validation": ["en/nope-*"]})
    refused(tmp_path, repo_of("c4"), ["train"], "no data files of a supported type",
            data_files={"train": ["nothing/*"]})
    refused(tmp_path, str(folders["c4"]), ["train"], "'en/c4-train.json.gz' is not a file",
            data_files={"train": ["en/c4-train.json.gz"]})


def test_data_files_as_globs_matching_nothing_name_the_key_the_split_and_the_globs(folders,
                                                                                  tmp_path):
    refused(tmp_path, str(folders["c4"]), ["train"], "download.data_files: the globs of split "
            "'train' match no data files of a supported type", "(src/*.parquet); fix them",
            data_files={"train": ["src/*.parquet"]})
    refused(tmp_path, str(folders["c4"]), ["train"], "(a/*.parquet, b/*.csv); fix them",
            data_files={"train": ["a/*.parquet", "b/*.csv"]})
    refused(tmp_path, repo_of("c4"), ["train", "validation"], "the globs of splits 'train' and "
            "'validation' match no", "(train: a/*; validation: b/*)",
            data_files={"train": ["a/*"], "validation": ["b/*"]})
    refused(tmp_path, repo_of("c4"), ["train", "validation"], "split 'validation' match no file "
            "in shapes/c4 (en/nope-*)",
            data_files={"train": ["en/c4-train.*"], "validation": ["en/nope-*"]})



@pytest.mark.parametrize("where", ["local", "hub"])
def test_a_glob_whose_bracket_is_part_of_a_file_name_gets_the_escape_hint(tmp_path, where):
    # datasets' globs (fsspec's, as Python's glob) read `[1]` as a character class (the one
    # character 1), so "v [1].jsonl" does not match the file "v [1].jsonl"; `[[]` matches `[`.
    files = {"train.jsonl": b'{"text": "t"}\n', "val/v [1].jsonl": b'{"text": "v"}\n'}
    if where == "hub":
        dataset = "shapes/brackets"
        FAKE_HUB.add_commit(dataset, files)
    else:
        for name, data in files.items():
            (tmp_path / "ds" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "ds" / name).write_bytes(data)
        dataset = str(tmp_path / "ds")
    message = refused(tmp_path, dataset, ["train", "validation"],
                      "the globs of split 'validation' match no file", "(val/v [1].jsonl)",
                      data_files={"train": ["train.jsonl"], "validation": ["val/v [1].jsonl"]})
    hinted = "val/v [[]1].jsonl"
    assert message.endswith(f"; a glob's `[` opens a character class, as in datasets: write "
                            f"`[[]` for a `[` of a file name ({hinted!r})"), message
    raw = tmp_path / "fixed"
    raw.mkdir()
    materialize(dataset, "main", ["train", "validation"], "text", raw,
                data_files={"train": ["train.jsonl"], "validation": [hinted]})
    assert read_source(raw).files["validation"] == ["val/v [1].jsonl"]
    # every split's globs matching nothing: the same hint
    refused(tmp_path, dataset, ["validation"], f"({hinted!r})",
            data_files={"validation": ["val/v [1].jsonl"]})


def test_unsupported_file_types_are_named_with_the_supported_ones(tmp_path):
    FAKE_HUB.add_commit("shapes/xml", {"train.xml": b"<a/>", "validation.xml": b"<b/>"})
    refused(tmp_path, "shapes/xml", ["train"], "datasets' 'xml' builder", ".parquet, .arrow, "
            ".jsonl/.json/.ndjson, .csv/.tsv, .txt")
    (tmp_path / "ds" / "docs").mkdir(parents=True)
    (tmp_path / "ds" / "docs" / "train.docx").write_bytes(b"PK..")
    refused(tmp_path, str(tmp_path / "ds"), ["train"], "no data files of a supported type",
            ".csv/.tsv")
    stray = tree_of(shapes_folder(tmp_path, "fineweb_edu"))
    stray["sample/10BT/notes.md"] = b"# not data"
    FAKE_HUB.add_commit("shapes/stray", stray)
    refused(tmp_path, "shapes/stray", ["train"], "hf://datasets/shapes/stray/sample/10BT/notes.md"
            " is not a parquet file", "leave it out with download.data_files",
            config="sample-10BT")


def shapes_folder(tmp_path: Path, shape: str) -> Path:
    shapes.SHAPES[shape](tmp_path / shape)
    return tmp_path / shape


def test_zip_archives_are_refused_without_being_opened(tmp_path):
    import zipfile
    (tmp_path / "ds").mkdir()
    with zipfile.ZipFile(tmp_path / "ds" / "train.zip", "w") as archive:
        archive.writestr("inner.jsonl", '{"text": "x"}\n')
    refused(tmp_path, str(tmp_path / "ds"), ["train"], ".zip archives", "does not read")


def test_data_files_outside_the_dataset_are_refused(folders, tmp_path):
    refused(tmp_path, str(folders["train_only"]), ["train"], "is outside the dataset",
            data_files={"train": [str(folders["c4"] / "en" / "*.json.gz")]})
    # a relative way out: nothing read from beside the dataset, nothing written beside raw/
    escape = os.path.relpath(folders["c4"] / "en", folders["train_only"])
    refused(tmp_path, str(folders["train_only"]), ["train"], "is outside the dataset",
            data_files={"train": [f"{escape}/*.json.gz"]})
    assert [p.name for p in tmp_path.iterdir()] == ["raw"] and not any((tmp_path / "raw").iterdir())


@pytest.mark.parametrize("readme, fragments", [
    ("---\nconfigs: [\n---\n", ["the YAML header of its README.md does not parse (", "fix it"]),
    ("---\nconfigs: [{config_name: x, data_files: [{split: train}]}]\n---\n", [": "]),
], ids=["not YAML", "data_files without a path"])
def test_a_readme_whose_metadata_does_not_parse_is_a_clear_error(tmp_path, readme, fragments):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text('{"text": "a story"}\n')
    (tmp_path / "ds" / "README.md").write_text(readme)
    message = refused(tmp_path, str(tmp_path / "ds"), ["train"], *fragments)
    assert message.split(": ", 1)[1].strip(), message  # says what is wrong


def test_a_missing_local_path_without_dot_slash_is_not_looked_up_on_the_hub(tmp_path,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpora").mkdir()
    FAKE_HUB.requests.clear()
    for dataset in ("my_corpus", "corpora/mine", "corpora/mine/train", "~/no/such/dir"):
        message = refused(tmp_path, dataset, ["train"], f"download.dataset {dataset!r}",
                          "is not a directory", "Hub dataset id")
        assert "unreachable" not in message and "Hub dataset id such as" in message
    assert FAKE_HUB.requests == []


def test_a_text_column_a_txt_dataset_lacks_is_refused(folders, tmp_path):
    refused(tmp_path, repo_of("gpt4_txt"), ["train"], "TinyStoriesV2-GPT4-train.txt",
            "the documents of a .txt file are in the column 'text'", text_column="story",
            data_files={"train": GPT4_FILES["train"]})


def test_a_missing_column_names_the_users_file_not_a_temporary_one(folders, tmp_path):
    message = refused(tmp_path, str(folders["jsonl_folders"]), ["train"], "no 'story' field",
                      text_column="story")
    assert re.search(rf"{re.escape(str(folders['jsonl_folders']))}/train/a.jsonl:1: ", message)


@pytest.mark.parametrize("key, value, message", [
    ("splits", "train", "download.splits must be a non-empty list of str or a mapping of str "
                        "to str, got 'train'"),
    ("splits", {"train": "train", "validation": "train"},
     "maps two bins to the dataset split 'train'"),
    ("splits", ["train", "../x"], "'../x' cannot be a bin's name"),
    ("data_files", 3, "download.data_files must be a str or a non-empty list of str or a "
                      "mapping of str to (str or a non-empty list of str) or null, got 3"),
    ("data_files", {"train": []}, "download.data_files must be"),
    ("config", 7, "download.config must be a str or null, got 7"),
    ("sample_by", "sentence", "download.sample_by is 'sentence'; valid values: line, paragraph, "
                              "document (or null)"),
    ("separator", "a\nb", "is matched against whole lines, so it cannot hold a line break"),
], ids=["splits-not-a-list", "two-bins-one-split", "bin-not-a-file-name", "data-files-type",
        "data-files-empty-list", "config-type", "sample-by-choice", "separator-line-break"])
def test_bad_download_params_name_the_key_and_what_is_valid(tmp_path, key, value, message):
    import yaml
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["download"][key] = value
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(TokbinError, match=re.escape(message)):
        load_params(tmp_path / "params.yaml")


def test_a_separator_and_another_sample_by_are_refused_together(tmp_path):
    import yaml
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    params["download"].update(separator="<|endoftext|>", sample_by="paragraph")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(TokbinError, match="download.separator decides the documents of .txt "
                                          "files, so download.sample_by \\(paragraph\\)"):
        load_params(tmp_path / "params.yaml")


def test_sample_by_or_a_separator_on_a_dataset_that_is_not_text_is_refused(folders, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    materialize(repo_of("train_only"), "main", ["train"], "text", raw)
    for kw in ({"sample_by": "paragraph"}, {"separator": "<|endoftext|>"}):
        with pytest.raises(TokbinError, match="choose the documents of .txt files, but "
                                              "shapes/train-only is read as parquet"):
            tokenize_dataset(raw, tmp_path / "tokens", ["train"], "text", "gpt2", "append", **kw)


def readme_examples() -> list[dict]:
    """The `download:` settings of the README's "Other datasets" section, in order."""
    import yaml
    text = (Path(__file__).parents[1] / "README.md").read_text()
    block = text.split("## Other datasets", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    return [yaml.safe_load(part)["download"] for part in block.strip().split("\n\n")]


def test_the_readmes_other_datasets_examples_build(folders, tmp_path):
    import yaml
    wikitext = tmp_path / "wikitext"
    for split in ("train", "validation", "test"):
        shapes._parquet(wikitext / "wikitext-103-raw-v1" / f"{split}-00000-of-00001.parquet",
                        "text", [f" = {split} article = \n", "", f" {split} text . \n"])
    (wikitext / "README.md").write_text(
        "---\nconfigs:\n- config_name: wikitext-103-raw-v1\n  data_files:\n" + "".join(
            f"  - split: {s}\n    path: wikitext-103-raw-v1/{s}-*\n"
            for s in ("train", "validation", "test")) + "---\n")
    served = {"Salesforce/wikitext": wikitext, "HuggingFaceFW/fineweb-edu": folders["fineweb_edu"],
              "roneneldan/TinyStories": folders["gpt4_txt"]}
    for repo, folder in served.items():
        FAKE_HUB.add_commit(repo, tree_of(folder))
    examples = readme_examples()
    assert len(examples) == 3
    for i, example in enumerate(examples):
        params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
        params["download"].update(example)
        (tmp_path / f"params-{i}.yaml").write_text(yaml.safe_dump(params))
        download = load_params(tmp_path / f"params-{i}.yaml").download
        out = tmp_path / f"example-{i}"
        out.mkdir()
        bins = build(out, download.dataset, download.bins, config=download.config,
                     data_files=download.data_files_by_split, sample_by=download.sample_by,
                     separator=download.separator, holdout=download.holdout)
        # (fineweb: the fixed texts and seed hold out one of its 120 documents)
        assert list(bins) == ["train", "validation"] and all(bins.values()), download.dataset
