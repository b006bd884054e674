"""bench/bench_real_text.py on a tiny corpus: what it measures, and how it judges the targets
(the benchmark itself runs by hand: docs/performance.md)."""
from __future__ import annotations

import pyarrow.parquet as pq

from bench import bench_real_text, real_corpora
from tokbin.fast_path import conservative_class
from tokbin.readers import TextBatch

TEXTS = ["plain text\n", "no\u00a0break space", "zero\u200bwidth", "“quoted” 日本語",
         "a <|endoftext|> literal"] * 40


def test_a_corpus_is_a_hub_layout_dataset_with_one_document_in_a_hundred_held_out(tmp_path):
    info = real_corpora.write_dataset(tmp_path / "corpus", TEXTS)
    files = sorted(p.name for p in (tmp_path / "corpus" / "data").iterdir())
    assert files == ["train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]
    train, validation = (pq.read_table(tmp_path / "corpus" / "data" / name)["text"].to_pylist()
                         for name in files)
    assert validation == [TEXTS[50], TEXTS[150]] and len(train) == len(TEXTS) - 2
    assert info["documents"] == len(TEXTS)


def test_routing_and_the_cross_checks_share_are_measured(gpt2):
    batches = [TextBatch.from_texts(TEXTS[k:k + 50]) for k in range(0, len(TEXTS), 50)]
    routing = bench_real_text.routing(batches, bench_real_text.gpt2_fast_engine(),
                                      conservative_class("gpt2"))
    assert routing["documents"] == len(TEXTS) and routing["to_tiktoken"] == 0
    assert routing["conservative_to_tiktoken"] == 80  # the no-break and zero-width spaces
    assert set(routing["conservative_characters"]) == {"U+00A0", "U+200B"}
    cpu = bench_real_text.cpu_rates(batches)
    assert cpu["tokens"] == sum(len(gpt2.encode_ordinary(t)) for t in TEXTS)
    assert cpu["engine_s"] > 0 and 0 <= cpu["check_s"] < cpu["engine_s"]


def result(mb, alone, stage_ratio, check=0.01, identical=True):
    return {"routing": {"bytes": mb * 2**20, "documents": 10, "to_tiktoken": 0,
                        "conservative_to_tiktoken": 0, "conservative_characters": []},
            "cpu": {"tiktoken_s": alone, "fastokens_alone_s": 1.0, "engine_s": 1.0,
                    "check_s": check, "tokens": 1000, "checked_tokens": 1},
            "stage": {"tiktoken": {"process_seconds": stage_ratio, "cpu_seconds": stage_ratio},
                      "fastokens": {"process_seconds": 1.0, "cpu_seconds": 1.0}},
            "identical": identical}


def test_the_targets_are_3x_4x_where_fastokens_alone_is_5x_and_a_5_percent_check(capsys):
    load = (1.0, 1.0)
    assert bench_real_text.report({"a": result(60, alone=4, stage_ratio=3.1)}, load)
    assert not bench_real_text.report({"a": result(60, alone=6, stage_ratio=3.9)}, load)
    assert bench_real_text.report({"a": result(60, alone=6, stage_ratio=4.1)}, load)
    assert bench_real_text.report({"small": result(40, alone=6, stage_ratio=1.5)}, load)
    assert not bench_real_text.report({"a": result(60, 6, 4.1, check=0.06)}, load)
    assert not bench_real_text.report({"a": result(60, 6, 4.1, identical=False)}, load)
    assert "NOT met" in capsys.readouterr().out
