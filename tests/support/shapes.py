"""Small dataset folders laid out as real Hub dataset repos are, one function per shape: each
writes the folder and returns nothing; `write_all(root)` writes them all under root/<shape>.

- tinystories_ml: one config (subset) per language in <lang>/, `story` column, train and test
  splits, README configs with a `default: true` (a multilingual TinyStories)
- fineweb_edu: configs whose globs reach nested folders (sample/10BT/*.parquet), train only
- c4: en/c4-train.*.json.gz and en/c4-validation.*.json.gz under README configs
- csv_valid: train.csv and valid.csv at the top ("valid" is the validation split)
- jsonl_folders: train/ and validation/ folders of .jsonl (one nested deeper)
- train_only: data/train-*.parquet, no validation split
- gpt4_txt: TinyStories' own .txt files: stories ended by a line holding <|endoftext|>
- zst: data/<split>-*.jsonl.zst, the train file in two zstd frames
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SEPARATOR = "<|endoftext|>"
GPT4_STORIES = {  # what each TinyStories-style .txt file holds, story by story
    "train": ["Once upon a time, there was a cat.\nThe cat sat.", "Tom ran.\n\nHe fell, “ouch”.",
              "  A story that starts with spaces.", "Lily said: <|endoftext|> is a word here."],
    "validation": ["The end of the valid file.", "One more\nstory."],
}


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def _parquet(path: Path, column: str, texts: list[str], row_group_size: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({column: texts, "id": list(range(len(texts)))}), path,
                   row_group_size=row_group_size)


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def tinystories_ml(root: Path) -> None:
    for lang in ("en", "fr", "de"):
        for i in (0, 1, 10):  # 10 sorts before 2: the order is by name, as datasets reads
            _parquet(root / lang / f"train-{i}-of-3.parquet", "story",
                     [f"{lang} train shard {i} story {j} “é”" for j in range(3)])
        _parquet(root / lang / "test-0-of-1.parquet", "story",
                 [f"{lang} test story {j}" for j in range(2)])
    configs = "".join(f"- config_name: {lang}\n  data_files:\n  - split: train\n"
                      f"    path: {lang}/train-*\n  - split: test\n    path: {lang}/test-*\n"
                      + ("  default: true\n" if lang == "fr" else "") for lang in ("en", "fr", "de"))
    _write(root / "README.md", f"---\nlicense: cdla-sharing-1.0\nconfigs:\n{configs}---\n# TS\n")


def fineweb_edu(root: Path) -> None:
    for i in range(3):
        _parquet(root / "sample" / "10BT" / f"{i:03d}_00000.parquet", "text",
                 [f"sample10BT file {i} doc {j}: some educational text." for j in range(40)],
                 row_group_size=16)
    _parquet(root / "sample" / "100BT" / "000_00000.parquet", "text", ["sample100BT doc"])
    for dump in ("CC-MAIN-2024-10", "CC-MAIN-2013-20"):
        _parquet(root / "data" / dump / "train-00000-of-00001.parquet", "text", [f"{dump} doc"])
    _write(root / "README.md", "---\nconfigs:\n"
           "- config_name: default\n  data_files:\n  - split: train\n    path: data/*/*\n"
           "- config_name: sample-10BT\n  data_files:\n  - split: train\n    path: sample/10BT/*\n"
           "- config_name: sample-100BT\n  data_files:\n  - split: train\n"
           "    path: sample/100BT/*\n---\n# FineWeb-Edu\n")


def c4(root: Path) -> None:
    for split, n in (("train", 3), ("validation", 2)):
        for i in range(n):
            rows = [{"text": f"c4 {split} {i} doc {j}\nsecond line", "url": f"https://x/{j}",
                     "timestamp": "2019-04-25T12:57:54Z"} for j in range(3)]
            _write(root / "en" / f"c4-{split}.{i:05d}-of-{n:05d}.json.gz",
                   gzip.compress(_jsonl(rows).encode()))
    _write(root / "realnewslike" / "c4-train.00000-of-00001.json.gz",
           gzip.compress(_jsonl([{"text": "realnews doc"}]).encode()))
    _write(root / "README.md", "---\nconfigs:\n- config_name: en\n  default: true\n"
           "  data_files:\n  - split: train\n    path: en/c4-train.*.json.gz\n"
           "  - split: validation\n    path: en/c4-validation.*.json.gz\n"
           "- config_name: realnewslike\n  data_files:\n  - split: train\n"
           "    path: realnewslike/c4-train.*.json.gz\n---\n# C4\n")


def csv_valid(root: Path) -> None:
    _write(root / "train.csv", 'text,label\nhello world,1\n"a, quoted\nmultiline one",0\n'
                               '  spaced  ,1\n"say ""hi""",0\n')
    _write(root / "valid.csv", "text,label\nvalid one,1\nvalid two,0\n")


def jsonl_folders(root: Path) -> None:
    _write(root / "train" / "b.jsonl", _jsonl([{"text": "train b 0"}, {"text": "train b 1"}]))
    _write(root / "train" / "a.jsonl", _jsonl([{"text": "train a 0", "meta": {"k": 1}}]))
    _write(root / "train" / "sub" / "c.jsonl", _jsonl([{"text": "train sub c 0"}]))
    _write(root / "validation" / "v.jsonl", _jsonl([{"text": "val 0"}, {"text": ""}]))


def train_only(root: Path, documents: int = 400) -> None:
    for i in range(2):
        _parquet(root / "data" / f"train-{i:05d}-of-00002.parquet", "text",
                 [f"train file {i} document {j}: once upon a time." for j in range(documents // 2)],
                 row_group_size=50)


def gpt4_txt(root: Path) -> None:
    for split, name in (("train", "train"), ("validation", "valid")):
        stories = GPT4_STORIES[split]
        _write(root / f"TinyStoriesV2-GPT4-{name}.txt",
               "".join(f"{story}\n{SEPARATOR}\n" for story in stories).replace("\n", "\r\n", 1))
    _parquet(root / "data" / "train-00000-of-00001.parquet", "text", ["the parquet files"])


def zst(root: Path) -> None:
    rows = _jsonl([{"text": f"zstd doc {i} “ünïcode”"} for i in range(5)]).encode()
    _write(root / "data" / "train-00000-of-00001.jsonl.zst",
           _zstd(rows) + _zstd(b'{"text": "from the second frame"}\n'))
    _write(root / "data" / "validation-00000-of-00001.jsonl.zst",
           _zstd(_jsonl([{"text": "zstd validation"}, {"text": "two"}]).encode()))


SHAPES = {f.__name__: f for f in (tinystories_ml, fineweb_edu, c4, csv_valid, jsonl_folders,
                                   train_only, gpt4_txt, zst)}


def write_all(root: Path) -> dict[str, Path]:
    folders = {}
    for name, build in SHAPES.items():
        build(root / name)
        folders[name] = root / name
    return folders

