"""The code point table is what the installed engines do, and its sweep can see a difference.

tokbin/gpt2_codepoint_classes.txt decides which documents the fast engine takes; it was
measured by bench/codepoint_table.py. These tests measure again, on a representative subset
(the first and last code point of every run of the table, every whitespace, every 61st code
point): they fail when an upgrade of tiktoken or fastokens changes how either treats a code
point there, or when the installed versions are not the table's. `python -m
bench.codepoint_table --verify` measures every code point; `--write` regenerates the table.
"""
from __future__ import annotations

import tomllib

import numpy as np
import tiktoken
import yaml

from bench.codepoint_table import (MUTANTS, expected, measure, representative_codepoints,
                                   tiktoken_pattern)
from conftest import ROOT
from tokbin.codepoints import (CODEPOINTS, codepoint_table, installed_versions, read_rows,
                               table_path)

ROWS = read_rows(table_path("gpt2").read_text(encoding="utf-8"))
NON_ASCII_WHITESPACE = [0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F,
                        0x205F, 0x3000]


def test_the_table_names_the_installed_engines_and_tiktokens_pattern():
    table = codepoint_table("gpt2")
    assert table.versions == installed_versions()
    assert table.pattern == tiktoken.get_encoding("gpt2")._pat_str


def test_the_table_covers_every_code_point_once_and_the_surrogates_are_unsafe():
    assert ROWS[0][0] == 0 and ROWS[-1][1] == CODEPOINTS - 1
    assert all(a[1] + 1 == b[0] for a, b in zip(ROWS, ROWS[1:]))
    table = codepoint_table("gpt2")
    assert table.unsafe[0xD800:0xE000].all()
    assert (table.unsafe == (np.arange(CODEPOINTS) >> 11 == 0xD800 >> 11)).all()  # only they


def test_the_installed_engines_do_what_the_table_says_on_a_representative_subset():
    cps = representative_codepoints(ROWS)
    assert len(cps) > 20000
    measured = measure(cps, contexts=["a{c}b", "  {c}x", " {c}{c}"])
    for name, got, want in zip(("tiktoken's class", "fastokens' class", "verdict"), measured,
                               expected(ROWS, cps)):
        wrong = cps[got != want]
        assert not len(wrong), f"{name} is not the table's at {[hex(c) for c in wrong[:10]]}"


def test_the_sweep_sees_an_engine_that_reads_only_ascii_whitespace():
    # tiktoken with \s narrowed to ASCII: exactly the non-ASCII whitespace must differ.
    cps = representative_codepoints(ROWS)
    mutant = tiktoken_pattern().replace(*MUTANTS["\\s -> ASCII whitespace"])
    _, _, differs = measure(cps, contexts=[], pattern=mutant)
    assert cps[differs].tolist() == NON_ASCII_WHITESPACE


def test_the_sweep_reads_each_class_off_the_engines_output():
    # Letters and a number newer than this Python's Unicode (14), whitespace it calls
    # otherwise, and format characters and separators it calls whitespace.
    cps = np.array([0x41, 0x31, 0x21, 0x09, 0x20, 0xA0, 0x105C0, 0x10D40, 0x1FAEF, 0xFEFF,
                    0x200B, 0x1C])
    tiktoken_classes, fastokens_classes, differs = measure(cps, contexts=["{c}"])
    assert tiktoken_classes.tolist() == ["L", "N", "O", "S", "Sp", "S", "L", "N", "O", "O",
                                         "O", "O"]
    assert (fastokens_classes == tiktoken_classes).all() and not differs.any()


def test_the_table_is_a_dependency_of_the_tokenize_stage_and_ships_with_tokbin():
    name = str(table_path("gpt2").relative_to(ROOT))
    assert name in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["tokenize"]["deps"]
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert table_path("gpt2").name in setuptools["package-data"]["tokbin"]
