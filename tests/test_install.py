"""Installing tokbin: the README's first command makes it importable from any folder, and
training code gets BinLoader from the light install (numpy and torch only), where pinned_path
says it needs the full one."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np

from conftest import ROOT, run
from tokbin.format import Meta, Source, SplitInfo, write_meta

FULL_INSTALL_ONLY = ("dvc", "dvc_data", "huggingface_hub", "pyarrow", "yaml", "tiktoken",
                     "fastokens", "tqdm", "ray")


def test_requirements_txt_installs_tokbin_itself():
    assert "-e ." in (ROOT / "requirements.txt").read_text().splitlines()


def test_a_script_beside_a_checkout_named_tokbin_imports_the_installed_tokbin(tmp_path,
                                                                             monkeypatch):
    """`git clone ... tokbin` leaves a folder named tokbin (no __init__.py) beside the user's
    scripts, which Python would import as an empty namespace package before an import hook."""
    (tmp_path / "tokbin").symlink_to(ROOT)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    script = tmp_path / "train.py"
    script.write_text("from tokbin import read_meta\nprint(read_meta.__module__)\n")
    assert run([sys.executable, str(script)], tmp_path).stdout == "tokbin.format\n"
    result = run([sys.executable, str(ROOT / "examples" / "train_bigram.py"), "--help"],
                 tmp_path)
    assert "usage: train_bigram.py" in result.stdout


def test_binloader_works_without_the_pipeline_dependencies(tmp_path):
    ids = np.arange(1000, dtype="<u2")
    ids.tofile(tmp_path / "train.bin")
    write_meta(tmp_path, Meta("gpt2", 50257, 50256, "none", "uint16", Source("test", None, None),
                              {"train": SplitInfo("train.bin", 1000, 1, 2000)}))
    script = textwrap.dedent(f"""
        import importlib.abc, sys

        class Absent(importlib.abc.MetaPathFinder):   # as in an install of tokbin[loader]
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {FULL_INSTALL_ONLY!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, Absent())
        from tokbin import BinLoader, TokbinError, pinned_path, read_meta
        x, y = BinLoader({str(tmp_path / "train.bin")!r}, batch_size=2, block_size=8).next_batch()
        assert (y[:, :-1] == x[:, 1:]).all() and read_meta({str(tmp_path)!r}).n_vocab == 50257
        try:
            pinned_path("data-v1")
        except TokbinError as e:
            print(e)
        print(sorted(m for m in sys.modules if m.partition(".")[0] in {FULL_INSTALL_ONLY!r}))
    """)
    out = run([sys.executable, "-c", script], tmp_path).stdout.splitlines()
    assert out[0].startswith("pinned_path needs DVC, which tokbin's loader install "
                             "(tokbin[loader]) leaves out: install tokbin[pipeline]")
    assert out[1] == "[]"
