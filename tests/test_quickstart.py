"""The README's first command, to the letter on a fresh clone: it builds the bundled sample
offline, without a warning, changing one line of params.yaml and leaving no experiment; the
plots it makes show offline; and the README's one command goes back to TinyStories. Also
`python -m tokbin set`, which the first command uses."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, git, make_project, run
from tokbin.cli import main as cli
from tokbin.format import read_meta
from tokbin.params import load_params

README = (ROOT / "README.md").read_text()


def first_command() -> list[str]:
    """The README's first command, less the install (this environment is installed)."""
    line = re.search(r"```bash\n(.*)\n", README).group(1).split("#")[0].strip()
    parts = line.split(" && ")
    assert parts[0] == "pip install -r requirements.txt"
    return parts[1:]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A fresh clone of the project, its params.yaml byte for byte the repository's."""
    repo = make_project(tmp_path_factory.mktemp("quickstart") / "tokbin")
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    git(repo, "commit", "-qam", "the repository's params.yaml")
    return repo


def test_the_first_command_builds_the_sample_offline_without_warnings_or_noise(clone):
    for command in first_command():
        result = run(["bash", "-c", command], clone)
        assert "warning" not in (result.stdout + result.stderr).lower(), result.stderr
    meta = read_meta(clone / "data")
    assert meta.source.dataset == "./sample"
    assert (meta.splits["train"].tokens, meta.splits["validation"].tokens) == (757_468, 15_709)
    assert git(clone, "diff", "--numstat", "params.yaml") == "1\t1\tparams.yaml\n"
    assert sorted(git(clone, "status", "--porcelain").splitlines()) == [
        " M params.yaml", "?? dvc.lock", "?? reports/"]
    assert run(["dvc", "exp", "list", "--all-commits"], clone).stdout.strip() == ""


def test_the_plots_page_shows_each_split_titled_with_no_script_to_fetch(clone):
    run(["dvc", "plots", "show"], clone)
    page = (clone / "dvc_plots" / "index.html").read_text()
    assert "<script" not in page  # nothing from a CDN: the page is whole offline
    for split in ("train", "validation"):
        assert f'<img src="static/workspace_reports_plots_{split}.svg">' in page
        chart = (clone / "dvc_plots" / "static" / f"workspace_reports_plots_{split}.svg")
        assert f"<title>{split}: document length distribution" in chart.read_text()


def test_the_readme_says_how_to_go_back_to_tinystories_in_one_command(clone):
    back = re.search(r"`([^`]+)` goes back to the TinyStories", README).group(1)
    run(["bash", "-c", back], clone)
    assert (clone / "params.yaml").read_text() == (ROOT / "params.yaml").read_text()
    assert load_params(clone / "params.yaml").download.dataset == "roneneldan/TinyStories"


# --- python -m tokbin set ----------------------------------------------------------------------

@pytest.fixture
def params(tmp_path, monkeypatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "sample").symlink_to(ROOT / "sample")  # a project root: its dataset is there
    monkeypatch.chdir(tmp_path)
    return tmp_path / "params.yaml"


def changed_lines(params: Path) -> list[tuple[str, str]]:
    before = (ROOT / "params.yaml").read_text().splitlines()
    after = params.read_text().splitlines()
    return [(a, b) for a, b in zip(before, after) if a != b]


def test_set_changes_only_the_values_keeping_comments_in_their_columns(params):
    assert cli(["set", "download.dataset=./sample", "binarize.shard_tokens=100000000"]) == 0
    (dataset, new_dataset), (shards, new_shards) = changed_lines(params)
    assert new_dataset.split("#")[0].rstrip() == "  dataset: ./sample"
    assert new_shards.split("#")[0].rstrip() == "  shard_tokens: 100000000"
    for old, new in ((dataset, new_dataset), (shards, new_shards)):
        assert new.index("#") == old.index("#") and new[new.index("#"):] == old[old.index("#"):]


def test_set_writes_a_list_in_place_of_a_block_list_and_quotes_text_yaml_would_misread(params):
    assert cli(["set", "download.splits=[train]", "download.revision=1234"]) == 0
    assert load_params(params).download.splits == ["train"]
    assert load_params(params).download.revision == "1234"  # text, not the number 1234
    assert "  - validation" not in params.read_text()


GPT2_STYLE = r"""'s|'t|'re| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.mark.parametrize("assignment, value", [
    (r"download.separator=\p{L}+| #|\s+", r"\p{L}+| #|\s+"),  # not a comment
    (f"download.separator={GPT2_STYLE}", GPT2_STYLE),
    ("download.separator=#### END", "#### END"),
    ("download.separator=[INST]", "[INST]"),  # not a list
    ("tokenize.eot_token=null", None),
    ('download.separator="<|endoftext|>"', "<|endoftext|>"),  # YAML's quotes, not the text's
    ("download.text_column='story'", "story"),
    ('download.separator="it\'s"', "it's"),
], ids=["comment-like", "quotes", "hash", "brackets", "null", "double-quoted", "single-quoted",
        "a quote inside"])
def test_set_keeps_a_text_or_null_key_s_value_as_written(params, assignment, value):
    assert cli(["set", assignment]) == 0
    section, key = assignment.split("=", 1)[0].split(".")
    assert getattr(getattr(load_params(params), section), key) == value


def test_set_edits_a_file_whose_dataset_is_not_on_this_machine_and_says_so(params, capsys):
    # a teammate's params.yaml: its local dataset folder is theirs, not here
    params.write_text(params.read_text().replace("roneneldan/TinyStories", "./their_corpus"))
    assert cli(["set", "tokenize.eot=none"]) == 0
    assert load_params(params).tokenize.eot == "none"
    assert "still fails the check stage: download.dataset './their_corpus'" in (
        capsys.readouterr().err)


def test_set_outside_the_project_says_to_run_from_the_repository_root(tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    assert cli(["set", "download.dataset=./sample"]) == 1
    assert capsys.readouterr().err == ("tokbin set: error: params.yaml not found: run from the "
                                       "repository root (the tokbin checkout holding params.yaml "
                                       "and dvc.yaml)\n")


def test_set_refuses_a_new_problem_in_a_file_that_already_has_one(params, capsys):
    params.write_text(params.read_text().replace("roneneldan/TinyStories", "./their_corpus"))
    before = params.read_text()
    assert cli(["set", "tokenize.encoding=gpt3"]) == 1
    assert "unknown tiktoken encoding 'gpt3'" in capsys.readouterr().err
    assert params.read_text() == before


@pytest.mark.parametrize("assignment, message", [
    ("binarize.dtype=uint8", "binarize.dtype is 'uint8'; valid values: auto, uint16, uint32"),
    ("binarize.dtyp=auto", "params.yaml has no key binarize.dtyp (the keys of binarize: dtype, "
                           "format, shard_tokens)"),
    ("dtype=auto", "'dtype=auto' is not section.key=value"),
    ("download.dataset=./nope", "download.dataset"),  # the check stage's checks, before dvc repro
    ("tokenize.encoding=gpt3", "tokenize.encoding"),
    ("tokenize.eot_token=foo", "tokenize.eot_token"),
])
def test_set_refuses_a_bad_key_or_value_and_leaves_params_yaml_as_it_was(params, capsys,
                                                                         assignment, message):
    assert cli(["set", "download.dataset=./sample", assignment]) == 1
    assert message in capsys.readouterr().err
    assert params.read_text() == (ROOT / "params.yaml").read_text()
