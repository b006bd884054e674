"""Security guards: no pickle in the data path, no remote dataset code (datasets' resolution
only, in one module; no dataset script ever runs), meta.json parsed strictly, no shell built
from parameters, no credentials in tracked files.

The code checks read tokbin/ and stages/ as syntax trees, so a comment or a docstring that
names a forbidden call does not trip them, and an aliased import does not slip past.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, make_project, run, write_parquet_dataset, stage_command
from tokbin.errors import TokbinError
from tokbin.format import Meta, SplitInfo

CODE_DIRS = ["tokbin", "stages"]


def code_files() -> list[Path]:
    files = sorted(p for d in CODE_DIRS for p in (ROOT / d).rglob("*.py"))
    assert len(files) > 5  # the scan found the package
    return files


def calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def dotted(node: ast.AST) -> str:
    """`np.load` for a call's function written np.load, `load` for load."""
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def keyword(call: ast.Call, name: str):
    """The constant value of keyword `name` in `call`, ... when absent, None when not constant."""
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else None
    return ...


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def offences(check) -> list[str]:
    found = []
    for path in code_files():
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(ROOT).as_posix()
        found += [f"{where}:{line}: {what}" for line, what in check(tree, where)]
    return found


# --- pickle ----------------------------------------------------------------------------------

NUMPY_FILE_CALLS = {"np.load", "numpy.load", "np.save", "numpy.save", "np.savez",
                    "numpy.savez", "np.savez_compressed", "numpy.savez_compressed"}


def pickle_uses(tree, where=""):
    for module in imported_modules(tree) & {"pickle", "cPickle", "dill", "joblib", "shelve"}:
        yield 0, f"imports {module}"
    for call in calls(tree):
        name = dotted(call.func)
        if name in NUMPY_FILE_CALLS and keyword(call, "allow_pickle") is not False:
            yield call.lineno, f"{name} without allow_pickle=False"
        if name.endswith(".load") and name.split(".")[0] == "torch" and \
                keyword(call, "weights_only") is not True:
            yield call.lineno, "torch.load without weights_only=True"


def test_no_pickle_in_the_data_path():
    assert offences(pickle_uses) == []


def test_the_pickle_guard_catches_a_numpy_load_that_allows_pickle():
    tree = ast.parse("import numpy as np\nnp.load('x.npy')\nnp.save('y', a, allow_pickle=True)\n"
                     "np.load('z.npy', allow_pickle=False)\nimport pickle\n")
    assert sorted(line for line, _ in pickle_uses(tree)) == [0, 2, 3]


# --- remote dataset code ---------------------------------------------------------------------

# tokbin takes one thing from Hugging Face datasets: which files a dataset's splits are
# (load_dataset_builder resolves configs and globs; it builds nothing, and datasets 5 runs no
# dataset script). Only this module may import datasets, and no module may call what builds a
# dataset or runs its code.
DATASETS_MODULE = "tokbin/resolve.py"
BUILDS_OR_RUNS = {"load_dataset", "load_from_disk", "download_and_prepare", "as_dataset",
                  "as_streaming_dataset", "dataset_module_factory", "import_main_class",
                  "get_dataset_builder_class", "prepare_module"}


def remote_code_uses(tree, where=""):
    if "datasets" in imported_modules(tree) and where != DATASETS_MODULE:
        yield 0, f"imports the datasets library outside {DATASETS_MODULE}"
    for call in calls(tree):
        name = dotted(call.func).split(".")[-1]
        if name in BUILDS_OR_RUNS:
            yield call.lineno, f"calls {name}"
        if keyword(call, "trust_remote_code") is not ...:
            yield call.lineno, "passes trust_remote_code"


def test_no_remote_dataset_code_is_ever_run():
    assert offences(remote_code_uses) == []


def test_the_remote_code_guard_catches_load_dataset_with_trust_remote_code():
    tree = ast.parse("from datasets import load_dataset\n"
                     "load_dataset('x', trust_remote_code=True)\n")
    assert sorted(line for line, _ in remote_code_uses(tree)) == [0, 2, 2]
    resolution = ast.parse("import datasets\nb = datasets.load_dataset_builder('x')\n"
                           "b.download_and_prepare()\n")
    assert [line for line, _ in remote_code_uses(resolution, DATASETS_MODULE)] == [3]


def test_a_hub_dataset_script_is_refused_and_never_run(tmp_path):
    from conftest import FAKE_HUB
    from tokbin.source import materialize
    marker = tmp_path / "the-script-ran"
    FAKE_HUB.add_commit("evil/scripted", {
        "scripted.py": f"open({str(marker)!r}, 'w').write('pwned')\n".encode(),
        "data/train-00000-of-00001.jsonl": b'{"text": "a"}\n'})
    for data_files in (None, {"train": ["data/*.jsonl"]}):
        with pytest.raises(TokbinError, match="is a dataset script repository; tokbin never "
                                              "runs dataset code"):
            materialize("evil/scripted", "main", ["train"], "text", tmp_path / "raw",
                        data_files=data_files)
    assert not marker.exists()


def test_resolution_leaves_nothing_behind_and_calls_nowhere_but_the_hub(tmp_path,
                                                                         monkeypatch):
    import datasets.load
    import datasets.utils._dataset_viewer as viewer
    from conftest import FAKE_HUB
    from tokbin.source import materialize
    elsewhere = []

    class Recorder:  # what datasets would use to count downloads or ask the dataset viewer
        def head(self, url, **kw):
            elsewhere.append(url)

        def get(self, url, **kw):
            elsewhere.append(url)
            raise RuntimeError("no network")

    monkeypatch.setattr(datasets.load, "get_session", lambda: Recorder())
    monkeypatch.setattr(viewer, "get_session", lambda: Recorder())
    FAKE_HUB.add_commit("acme/counted", {"data/train-00000-of-00001.jsonl": b'{"text": "a"}\n',
                                         "README.md": b"# counted"})
    (tmp_path / "raw").mkdir()
    materialize("acme/counted", "main", ["train"], "text", tmp_path / "raw")
    assert elsewhere == [] and FAKE_HUB.unknown == []
    hub_cache = Path(os.environ["HF_HOME"]) / "hub"
    assert not hub_cache.exists() or not any(hub_cache.iterdir())  # the README went to a temp


TOKENIZE_THEN_LIST_IMPORTS = """
import sys
from pathlib import Path
import tokbin.engines
from tokbin.tokenize import tokenize_dataset
tokbin.engines.FASTOKENS_FROM_BYTES = 0  # the fast engine's imports too, on the small sample
tokenize_dataset(Path(sys.argv[1]), Path(sys.argv[2]), ["train", "validation"], "text", "gpt2",
                 "append", engine="fastokens", workers=2)
print(" ".join(sorted(sys.modules)))
"""


def test_tokenize_binarize_and_the_loader_never_import_datasets(tmp_path):
    """Only tokbin/resolve.py imports datasets (above); it is outside the others' imports, and
    a tokenize run imports it from nowhere else either."""
    from test_house import closure
    for module in ("stages.tokenize", "stages.binarize", "tokbin.loader", "tokbin.cli"):
        assert DATASETS_MODULE.replace("/", ".").removesuffix(".py") not in closure(module)
    from tokbin.source import materialize
    (tmp_path / "raw").mkdir()
    materialize(str(ROOT / "sample"), "main", ["train", "validation"], "text", tmp_path / "raw")
    imported = run([sys.executable, "-c", TOKENIZE_THEN_LIST_IMPORTS, str(tmp_path / "raw"),
                    str(tmp_path / "tokens")], ROOT).stdout.split()
    assert "tokbin.tokenize" in imported and (tmp_path / "tokens" / "train.bin").exists()
    assert "datasets" not in imported and "pandas" not in imported  # pandas: csv files only


# --- shell -----------------------------------------------------------------------------------

SHELL_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
               "os.execl", "os.execlp", "os.spawnl", "os.spawnlp"}


def shell_uses(tree, where=""):
    for call in calls(tree):
        if dotted(call.func) in SHELL_CALLS:
            yield call.lineno, f"calls {dotted(call.func)}"
        if keyword(call, "shell") not in (..., False):
            yield call.lineno, "passes shell=True (or a non-constant shell=)"


def test_no_shell_is_built_in_the_code():
    assert offences(shell_uses) == []


def test_the_shell_guard_catches_shell_true_and_os_system():
    tree = ast.parse("import os, subprocess\nos.system(cmd)\nsubprocess.run(c, shell=True)\n"
                     "subprocess.run(['ls'])\n")
    assert sorted(line for line, _ in shell_uses(tree)) == [2, 3]


def test_dvc_stage_commands_take_no_parameters_into_the_shell():
    """Stages read params.yaml themselves; a `${...}` in a cmd would put a parameter's text
    into a shell command line."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        commands = stage["cmd"] if isinstance(stage["cmd"], list) else [stage["cmd"]]
        for command in commands:
            assert not re.search(r"[$`]", command), f"{name}: {command}"


# --- meta.json, strictly ---------------------------------------------------------------------

VALID_META = {"format": "tokbin", "version": 1, "encoding": "gpt2", "n_vocab": 50257,
              "eot_token": 50256, "eot": "append", "dtype": "uint16",
              "source": {"dataset": "./sample", "revision": None, "sha": None},
              "splits": {"train": {"file": "train.bin", "tokens": 3, "documents": 1,
                                   "bytes": 6}}}


def mutated(change) -> str:
    meta = json.loads(json.dumps(VALID_META))
    change(meta)
    return json.dumps(meta)


def test_a_valid_meta_json_parses_in_every_format_version():
    assert Meta.from_json(json.dumps(VALID_META)).n_vocab == 50257  # version 1: headerless
    meta = dataclasses.replace(Meta.from_json(json.dumps(VALID_META)), bin_format="llmc",
                               splits={"train": SplitInfo("train.bin", 3, 1, 6 + 1024,
                                                          docs="train.docs",
                                                          docs_crc32="0123abcd")})
    written = json.loads(meta.to_json())  # the current version: bin_format and docs
    assert (written["version"], written["bin_format"]) == (5, "llmc")
    assert written["splits"]["train"]["docs"] == "train.docs"
    assert written["splits"]["train"]["docs_crc32"] == "0123abcd"
    assert Meta.from_json(meta.to_json()) == meta and meta.header_bytes == 1024


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("bin_format"), "version 5 needs a field 'bin_format'"),
    (lambda m: m.update(bin_format="pickle"), "bin_format 'pickle' is not one of"),
    (lambda m: m["splits"]["train"].update(docs="../x.docs"), "plain file name"),
    (lambda m: m["splits"]["train"].update(docs=None), "field 'docs' is None"),
    (lambda m: m["splits"]["train"].update(bytes=6), r"size \+ 1024 header bytes"),
    (lambda m: m["splits"]["train"].update(docs_crc32="XYZ"), "docs_crc32 must be 8 lowercase"),
    (lambda m: m["splits"]["train"].pop("docs"), "docs_crc32 without docs"),
], ids=["no bin_format", "unknown bin_format", "index outside the folder", "null index",
        "llmc bytes without the header", "bad index CRC-32", "index CRC-32 without an index"])
def test_a_current_meta_json_refuses_a_missing_or_bad_format_and_index(change, message):
    meta = dataclasses.replace(Meta.from_json(json.dumps(VALID_META)), bin_format="llmc",
                               splits={"train": SplitInfo("train.bin", 3, 1, 6 + 1024,
                                                          docs="train.docs",
                                                          docs_crc32="0123abcd")})
    raw = json.loads(meta.to_json())
    change(raw)
    with pytest.raises(TokbinError, match=message):
        Meta.from_json(json.dumps(raw))


@pytest.mark.parametrize("change, message", [
    (lambda m: m.update(extra=1), r"unknown fields \['extra'\]"),
    (lambda m: m["source"].update(token="hf_x"), r"source: unknown fields \['token'\]"),
    (lambda m: m["splits"]["train"].update(offset=0), r"splits.train: unknown fields"),
    (lambda m: m.pop("eot_token"), r"missing fields \['eot_token'\]"),
    (lambda m: m.update(n_vocab="50257"), "field 'n_vocab' has the wrong type"),
    (lambda m: m.update(n_vocab=True), "field 'n_vocab' has the wrong type"),
    (lambda m: m.update(n_vocab=50257.0), "field 'n_vocab' has the wrong type"),
    (lambda m: m.update(encoding=None), "field 'encoding' has the wrong type"),
    (lambda m: m["splits"]["train"].update(tokens=[3]), "field 'tokens' has the wrong type"),
    (lambda m: m.update(dtype="float32"), "dtype 'float32' is not one of"),
    (lambda m: m.update(format="pickle"), "format is 'pickle'"),
    (lambda m: m.update(version=6), "format version 6 is not supported"),
    (lambda m: m.update(bin_format="nanogpt"), "version 1 has no field 'bin_format'"),
    (lambda m: m["splits"]["train"].update(file="../../etc/passwd"), "plain file name"),
    (lambda m: m["splits"]["train"].update(crc32="1C291CA3"), "crc32 must be 8 lowercase hex"),
    (lambda m: m["splits"]["train"].update(crc32=None), "crc32 must be 8 lowercase hex"),
], ids=["unknown field", "unknown source field", "unknown split field", "missing field",
        "string for int", "bool for int", "float for int", "null for string", "list for int",
        "unknown dtype", "other format", "other version", "bin_format in version 1",
        "path outside the folder", "crc32 not lowercase hex", "null crc32"])
def test_meta_json_refuses_unknown_missing_and_ill_typed_fields(change, message):
    with pytest.raises(TokbinError, match=message):
        Meta.from_json(mutated(change))


@pytest.mark.parametrize("text", ["[]", "not json", '"tokbin"'])
def test_meta_json_that_is_not_a_json_object_is_refused(text):
    with pytest.raises(TokbinError):
        Meta.from_json(text)


# --- credentials -----------------------------------------------------------------------------

CREDENTIAL_KEYS = re.compile(r"access_key_id|secret_access_key|session_token|password|"
                             r"\btoken\b|credentialpath|account_key|sas_token|client_secret",
                             re.IGNORECASE)
SECRET_VALUES = re.compile(r"AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{30,}|ghp_[A-Za-z0-9]{30,}")


def test_the_tracked_dvc_config_holds_no_credentials():
    config = (ROOT / ".dvc" / "config").read_text()
    assert not CREDENTIAL_KEYS.search(config), config


def test_dvc_config_local_where_credentials_belong_is_git_ignored():
    ignored = (ROOT / ".dvc" / ".gitignore").read_text().split()
    assert "/config.local" in ignored


def test_no_secret_like_value_is_in_any_tracked_or_project_file():
    files = [ROOT / name for name in run(["git", "ls-files"], ROOT).stdout.split()]
    files += [p for d in ["tokbin", "stages", "docs", "bench"] for p in (ROOT / d).rglob("*")]
    texts = {p: p.read_text(errors="ignore") for p in set(files)
             if p.is_file() and p.suffix != ".parquet"}
    assert [p for p, text in texts.items() if SECRET_VALUES.search(text)] == []


def test_the_docs_set_remote_credentials_with_dvc_remote_modify_local():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    lines = [line for d in docs if d.exists() for line in d.read_text().splitlines()
             if "dvc remote modify" in line and CREDENTIAL_KEYS.search(line)]
    assert lines, "no doc shows how to set remote credentials"
    assert all("--local" in line for line in lines), lines


def test_a_hub_token_in_the_environment_is_never_written_to_the_outputs(tmp_path, monkeypatch):
    secret = "hf_" + "S3cr3t" * 6
    monkeypatch.setenv("HF_TOKEN", secret)
    repo = make_project(tmp_path / "project", download__dataset="./dataset")
    write_parquet_dataset(repo / "dataset", {"train": ["a"], "validation": ["b"]})
    run(stage_command(repo, "download"), repo)
    written = [p for p in (repo / "data").rglob("*") if p.is_file()]
    assert written
    assert not [p for p in written if secret.encode() in p.read_bytes()]
