"""Messages that point the right way: a Ctrl-C at any moment of a stage, and params.yaml values
that YAML reads otherwise than the user meant or that sit under the wrong section."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from tokbin.errors import TokbinError
from tokbin.params import parse_params

PARAMS = (ROOT / "params.yaml").read_text()


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    """`code` run from the repo root, as DVC runs a stage (with DVC_STAGE set)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, text=True,
                          capture_output=True, env={"PATH": "/usr/bin:/bin", "DVC_STAGE":
                                                    "tokenize", **env}, timeout=60)


# --- Ctrl-C ------------------------------------------------------------------------------------

def test_ctrl_c_during_a_stages_imports_is_one_line_not_a_traceback():
    result = python("""
        import os, runpy, signal
        import stages                       # what `python -m stages.tokenize` runs first
        os.kill(os.getpid(), signal.SIGINT) # the Ctrl-C, while the stage's imports run
        runpy.run_module("stages.tokenize", run_name="__main__")
    """)
    assert result.returncode == 130
    assert result.stderr == "tokenize: interrupted before it started; nothing was written\n"


def test_ctrl_c_while_a_stage_runs_says_no_output_was_written():
    result = python("""
        import os, signal, time
        import stages
        from tokbin.stage import run_stage

        def main():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)

        run_stage("tokenize", main)
    """)
    assert result.returncode == 130
    assert result.stderr == ("tokenize: interrupted; no output was written (`dvc repro` runs it "
                             "again)\n")


def test_sigterm_during_a_stages_imports_is_one_line_and_exit_143():
    result = python("""
        import os, runpy, signal
        import stages
        os.kill(os.getpid(), signal.SIGTERM)  # timeout, docker stop, Kubernetes, Slurm
        runpy.run_module("stages.tokenize", run_name="__main__")
    """)
    assert result.returncode == 143
    assert result.stderr == "tokenize: interrupted before it started; nothing was written\n"


def test_sigterm_while_a_stage_runs_removes_its_temporary_and_says_so_like_ctrl_c(tmp_path):
    result = python(f"""
        import os, signal, time
        import stages
        from tokbin.fsio import atomic_path
        from tokbin.stage import run_stage

        def main():
            with atomic_path({str(tmp_path / "train.bin")!r}) as tmp:
                tmp.write_bytes(b"partial")
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)

        run_stage("tokenize", main)
    """)
    assert result.returncode == 143
    assert result.stderr == ("tokenize: interrupted; no output was written (`dvc repro` runs it "
                             "again)\n")
    assert list(tmp_path.iterdir()) == [], "the temporary or a partial output was left"


def test_ctrl_c_after_a_stage_finished_lets_it_exit_as_finished():
    """Its outputs are complete: a Ctrl-C while the interpreter waits for a worker thread at
    exit would otherwise kill it by SIGINT (DVC: "exited with -2") and lose the finished run."""
    result = python("""
        import os, signal, threading, time
        import stages
        from tokbin.stage import run_stage

        worker = threading.Thread(target=time.sleep, args=(0.5,))  # joined at exit
        run_stage("tokenize", lambda: (worker.start(), print("tokenize: done", flush=True)))
        os.kill(os.getpid(), signal.SIGINT)
    """)
    assert (result.returncode, result.stdout, result.stderr) == (0, "tokenize: done\n", "")


# --- params.yaml -------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("1e6", "binarize.shard_tokens is 1e6, which YAML reads as text, not an integer; write it "
            "in digits: shard_tokens: 1000000"),
    ("1.0e+6", "binarize.shard_tokens is 1000000.0, which YAML reads as a decimal number, not an "
               "integer; write it in digits: shard_tokens: 1000000"),
    ("-5", "binarize.shard_tokens is -5; set it to 0 (one bin per split) or the most tokens per "
           "shard (e.g. 100000000)"),
    ("many", "binarize.shard_tokens must be an integer, got 'many' (str)"),
])
def test_a_number_yaml_does_not_read_as_an_integer_says_how_to_write_it(value, message):
    with pytest.raises(TokbinError, match="^params.yaml: " + message.replace("(", r"\(")
                       .replace(")", r"\)").replace(".", r"\.").replace("+", r"\+") + "$"):
        parse_params(PARAMS.replace("shard_tokens: 0 ", f"shard_tokens: {value} "),
                     Path("params.yaml"))


@pytest.mark.parametrize("old, new, fixed, message", [
    ("shard_tokens: 0 ", "shard_tokens: 017 ", "shard_tokens: 17 ", r"binarize.shard_tokens "
     r"reads as 15 for the stages \(PyYAML, YAML 1.1\) but as 17 for DVC \(YAML 1.2\), which "
     "records it in dvc.lock; write plain decimal digits, without a leading zero or :, so that "
     "both read it alike$"),
    ("shard_tokens: 0 ", "shard_tokens: 1:00 ", "shard_tokens: 60 ", "binarize.shard_tokens "
     "reads as 60 for the stages .* but as '1:00' for DVC"),
    ("  materialize: true ", "  materialize: yes ", "  materialize: true ", "download.materialize "
     "reads as True for the stages .* but as 'yes' for DVC .*; write true or false"),
    ("  revision: main ", "  revision: 4567e89 ", "  revision: '4567e89' ", "download.revision "
     "reads as '4567e89' for the stages .* but as 4.567e[+]92 for DVC .*; quote it"),
    ("  - validation\n", "  - 08\n", "  - '08'\n", r"download.splits\[1\] reads as '08' for the "
     "stages .* but as 8 for DVC .*; quote it"),
], ids=["leading zero", "sexagesimal", "yes", "a short commit sha", "a list item"])
def test_a_value_the_stages_and_dvc_read_differently_is_refused(old, new, fixed, message):
    # the stages would build with one value while dvc.lock and `dvc params diff` show another
    with pytest.raises(TokbinError, match="^params.yaml: " + message):
        parse_params(PARAMS.replace(old, new), Path("params.yaml"))
    parse_params(PARAMS.replace(old, fixed), Path("params.yaml"))


@pytest.mark.parametrize("value", ["100_000_000", "0x10", "0b101"])
def test_numbers_both_loaders_read_alike_are_accepted(value):
    params = parse_params(PARAMS.replace("shard_tokens: 0 ", f"shard_tokens: {value} "),
                          Path("params.yaml"))
    assert params.binarize.shard_tokens == int(value, 0)


def test_an_alias_that_refers_to_itself_is_refused_not_followed_forever():
    text = PARAMS.replace("  - validation\n", "").replace(
        "  holdout: null ", "  holdout: &h {fraction: 0.1, seed: 1, x: *h} ")
    with pytest.raises(TokbinError, match="unknown key download.holdout.x"):
        parse_params(text, Path("params.yaml"))


def test_a_fraction_yaml_reads_as_text_says_how_to_write_it():
    text = PARAMS.replace("  holdout: null ", "  holdout: {fraction: 5e-4, seed: 2357} ")
    with pytest.raises(TokbinError, match=r"^params.yaml: download.holdout.fraction is 5e-4, "
                                          r"which YAML reads as text, not a number; write it "
                                          r"with a point: fraction: 0.0005$"):
        parse_params(text, Path("params.yaml"))


def test_a_key_given_twice_is_refused_with_both_lines():
    # PyYAML keeps the last silently: `tokbin set` would have edited the first, to no effect
    text = PARAMS.replace("  eot: append ", "  eot: append\n  eot: none  #")
    line = PARAMS[:PARAMS.index("  eot: append ")].count("\n") + 1
    with pytest.raises(TokbinError, match=rf"^params.yaml: key 'eot' is given twice \(lines "
                                          rf"{line} and {line + 1}\); remove one$"):
        parse_params(text, Path("params.yaml"))


def test_an_empty_text_value_says_it_is_empty():
    with pytest.raises(TokbinError, match=r"^params.yaml: tokenize.pattern must be a str or "
                                          r"null, not an empty string$"):
        parse_params(PARAMS.replace("  pattern: null ", "  pattern: '' "), Path("params.yaml"))


def test_a_key_at_the_top_level_that_belongs_in_a_section_says_which():
    text = PARAMS.replace("  eot: append ", "  # eot moved ") + "eot: none\n"
    with pytest.raises(TokbinError, match=r"eot \(at the top level\) is misplaced: eot is a key "
                                          r"of tokenize: \(tokenize.eot\); move it under"):
        parse_params(text, Path("params.yaml"))


def test_a_key_both_in_its_section_and_another_says_to_remove_the_stray_one():
    text = PARAMS.replace("binarize:\n", "binarize:\n  eot: none\n")
    with pytest.raises(TokbinError, match="binarize.eot is misplaced.*remove it there: "
                                          "tokenize.eot is already set"):
        parse_params(text, Path("params.yaml"))
