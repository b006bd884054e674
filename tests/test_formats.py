"""Every format `datasets.load_dataset` reads, tokbin reads to the same documents in the same
order: text (line, paragraph, document), JSON Lines and JSON (arrays, `field`, pretty-printed),
CSV/TSV, Arrow, and gzip/bz2/xz/zstd compression; streamed with bounded memory (the readers'
chunks are made tiny here, so that every boundary case is crossed); and a damaged file or a
value that is not text is an error naming the user's file and line or row.
"""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
import re
import subprocess
import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from tokbin import jsonfiles, readers, textfiles
from tokbin.errors import TokbinError
from tokbin.format import read_source
from tokbin.readers import DataFile, Reading, iter_text_batches
from tokbin.source import materialize
from tokbin.tokenize import reading_for, tokenize_dataset

TXT = ("\ufeffBOM first\r\nsecond line\n\nafter blank\rlone cr\n\n\nthird para\n  \n"
       "x\u2028y\x0cz\x85w\r\n\r\n\n\nlast no newline")


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return sink.getvalue().to_pybytes()


def write(folder, files: dict[str, bytes | str]):
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return folder


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(autouse=True)
def tiny_chunks(monkeypatch):
    """Chunks of a few characters: every document, line and JSON value crosses a boundary."""
    monkeypatch.setattr(textfiles, "CHUNK_CHARS", 5)
    monkeypatch.setattr(jsonfiles, "CHUNK_CHARS", 7)


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    import datasets
    datasets.disable_progress_bars()
    cache = str(tmp_path_factory.mktemp("datasets-cache"))
    return lambda folder, **kw: datasets.load_dataset(str(folder), cache_dir=cache, **kw)


def documents(tmp_path, folder, splits, sample_by=None, data_files=None, text_column="text"):
    """What tokbin reads for each split: download, then the tokenize stage's reader."""
    raw = tmp_path / "raw"
    raw.mkdir(parents=True)
    materialize(str(folder), "main", splits, text_column, raw, data_files=data_files)
    source = read_source(raw)
    reading = reading_for(source, text_column, sample_by, None)
    return {split: [text for name in source.files[split]
                    for batch in iter_text_batches(DataFile(str(raw / name), name), reading, 64)
                    for text in batch.texts()] for split in splits}


def assert_same_as_load_dataset(tmp_path, load, folder, splits, sample_by=None, **kw):
    got = documents(tmp_path, folder, splits, sample_by, kw.get("data_files"))
    expected = load(folder, **({"sample_by": sample_by} if sample_by else {}), **kw)
    for split in splits:
        assert got[split] == expected[split]["text"], split


@pytest.mark.parametrize("sample_by", ["line", "paragraph", "document"])
def test_text_files_read_as_the_text_builder_reads_them(tmp_path, load, sample_by):
    folder = write(tmp_path / "ds", {"train.txt": TXT, "validation.txt": "a\n\n\n\nb\n\n\nc\n\n\n",
                                     "test.txt": "\n\na\n"})
    assert_same_as_load_dataset(tmp_path, load, folder, ["train", "validation", "test"],
                                sample_by)


def test_a_configs_text_options_apply_and_download_sample_by_overrides_them(tmp_path, load):
    folder = write(tmp_path / "ds", {"train.txt": "p1 a\np1 b\n\np2\n", "README.md":
                                     "---\nconfigs:\n- config_name: paras\n  sample_by: paragraph"
                                     "\n  keep_linebreaks: true\n  data_files: train.txt\n---\n"})
    assert documents(tmp_path, folder, ["train"])["train"] == load(folder)["train"]["text"] == [
        "p1 a\np1 b", "p2\n"]
    assert documents(tmp_path / "l", folder, ["train"], "line")["train"] == load(
        folder, sample_by="line")["train"]["text"] == ["p1 a\n", "p1 b\n", "\n", "p2\n"]


def test_json_lines_arrays_and_pretty_printed_objects(tmp_path, load):
    folder = write(tmp_path / "ds", {
        "train/a.jsonl": '\ufeff{"text": "bom"}\r\n\n   \n{"text": "crlf \\u2028 \\ud83d\\ude00"}\n'
                         '{"text": "two on"} {"text": "one line"}\n{"text": "no newline"}',
        "train/b.json": '\n  [{"text": "array 0"},\n {"text": "array 1"}]',
        "train/c.json": '{"text": "one"}\n{\n  "text":\n    "pretty"\n}\n\n{"text": "p2"}',
        "train/d.json": json.dumps(["strings", "are", "the text column"]),
        "validation/v.jsonl": jsonl([{"text": ""}, {"text": "x" * 50}])})
    assert_same_as_load_dataset(tmp_path, load, folder, ["train", "validation"])


def test_json_rows_under_a_configs_field(tmp_path, load):
    folder = write(tmp_path / "ds", {
        "train.json": json.dumps({"version": 1, "data": [{"text": "f0"}, {"text": "f1"}],
                                  "after": {"x": [1]}}),
        "README.md": "---\nconfigs:\n- config_name: default\n  field: data\n"
                     "  data_files: train.json\n---\n"})
    assert_same_as_load_dataset(tmp_path, load, folder, ["train"])


def test_csv_and_tsv_with_quotes_line_breaks_and_compression(tmp_path, load):
    csv = ('text,label\r\nhello world,1\r\n"a, quoted\r\nmultiline one",0\r\n\r\n'
           '"say ""hi""",1\r\n  spaced  ,0\r\nplain é,1\r\n007,1\r\n')
    folder = write(tmp_path / "csv", {"train.csv": csv, "validation.csv.gz":
                                      gzip.compress(b"text\nzipped\n")})
    assert_same_as_load_dataset(tmp_path / "c", load, folder, ["train", "validation"])
    folder = write(tmp_path / "tsv", {"train.tsv.bz2": bz2.compress(b'text\tn\n"q\tuoted"\t1\n')})
    assert_same_as_load_dataset(tmp_path / "t", load, folder, ["train"])
    semi = write(tmp_path / "semi", {"data.csv": "text;n\nsemi, colon;1\n", "README.md":
                                     "---\nconfigs:\n- config_name: default\n  sep: ';'\n"
                                     "  data_files:\n  - split: train\n    path: data.csv\n---\n"})
    assert_same_as_load_dataset(tmp_path / "s", load, semi, ["train"])


def test_compression_by_extension_or_magic_number_every_member_and_frame(tmp_path, load):
    lines = b"first \xc3\xa9 line\nsecond\n"
    folder = write(tmp_path / "ds", {
        "train/a.txt.gz": gzip.compress(lines) + gzip.compress(b"second member\n"),
        "train/b.txt": gzip.compress(b"gzip named .txt\n"),  # found by its magic number
        "train/c.txt.bz2": bz2.compress(lines) + bz2.compress(b"second stream\n"),
        "train/d.txt.xz": lzma.compress(lines),
        "train/e.txt.zst": zstd(lines) + zstd(b"second frame\n")})
    assert_same_as_load_dataset(tmp_path, load, folder, ["train"])


def test_arrow_stream_and_file_record_batch_by_record_batch(tmp_path, load):
    table = pa.table({"text": ["arrow 0", "arrow 1", "arrow 2"], "n": [0, 1, 2]})
    folder = tmp_path / "ds"
    folder.mkdir()
    for name, new in (("train.arrow", pa.ipc.new_stream), ("validation.arrow", pa.ipc.new_file)):
        with pa.OSFile(str(folder / name), "wb") as sink, new(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    assert_same_as_load_dataset(tmp_path, load, folder, ["train", "validation"])


def test_a_dictionary_encoded_text_column_in_parquet_and_arrow(tmp_path, load):
    # what a pandas categorical column becomes: load_dataset reads it as strings
    texts = pa.array(["same story", "other story", "same story"]).dictionary_encode()
    table = pa.table({"text": texts})
    for kind in ("parquet", "arrow"):
        folder = tmp_path / kind / "ds"
        folder.mkdir(parents=True)
        if kind == "parquet":
            pq.write_table(table, folder / "train.parquet", row_group_size=2)
        else:
            with pa.OSFile(str(folder / "train.arrow"), "wb") as sink, \
                    pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table, max_chunksize=2)
        assert_same_as_load_dataset(tmp_path / kind, load, folder, ["train"])


# --- bounded memory ------------------------------------------------------------------------

READ_PEAK = """
import resource, sys
from tokbin.readers import DataFile, Reading, iter_text_batches
reading = Reading(sys.argv[2], "text", {"separator": "<|endoftext|>"} if sys.argv[2] == "text"
                  else {})
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
documents = sum(len(b) for b in iter_text_batches(DataFile(sys.argv[1], sys.argv[1]), reading))
print(documents, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""
STREAMED_BYTES = 96 << 20


@pytest.mark.parametrize("name, builder, row", [
    ("big.jsonl.zst", "json", json.dumps({"text": "A story that goes on. " * 30}) + "\n"),
    ("big.txt.gz", "text", "A story that goes on.\n" * 30 + "<|endoftext|>\n"),
])
def test_a_large_compressed_file_is_streamed_in_bounded_memory(tmp_path, name, builder, row):
    path, block = tmp_path / name, row.encode() * ((1 << 20) // len(row))
    with pa.CompressedOutputStream(str(path), "zstd" if builder == "json" else "gzip") as out:
        for _ in range(STREAMED_BYTES // len(block)):
            out.write(block)
    result = subprocess.run([sys.executable, "-c", READ_PEAK, str(path), builder], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    documents, grown = map(int, result.stdout.split())
    assert documents == STREAMED_BYTES // len(block) * (len(block) // len(row))
    assert grown < STREAMED_BYTES / 4, f"RSS grew {grown / 1e6:.0f} MB"


def test_a_json_array_on_one_line_is_streamed_in_bounded_memory(tmp_path):
    # what json.dump(rows, f) writes: no line end to cut the text at
    path, row = tmp_path / "big.json.zst", json.dumps({"text": "A story that goes on. " * 30})
    block = ((row + ", ") * ((1 << 20) // (len(row) + 2))).encode()
    blocks = STREAMED_BYTES // len(block)
    with pa.CompressedOutputStream(str(path), "zstd") as out:
        out.write(b"[")
        for _ in range(blocks):
            out.write(block)
        out.write(row.encode() + b"]")
    result = subprocess.run([sys.executable, "-c", READ_PEAK, str(path), "json"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    documents, grown = map(int, result.stdout.split())
    assert documents == blocks * (len(block) // (len(row) + 2)) + 1
    assert grown < STREAMED_BYTES / 4, f"RSS grew {grown / 1e6:.0f} MB"


@pytest.mark.parametrize("name, builder", [("train.txt", "text"), ("train.jsonl", "json"),
                                           ("train.csv", "csv"), ("train.parquet", "parquet"),
                                           ("train.arrow", "arrow")])
def test_a_run_of_empty_or_one_character_documents_is_cut_into_bounded_batches(tmp_path, name,
                                                                               builder):
    # They add (almost) no text to a batch, so its text alone would let any run of them be
    # one batch: a list, offsets and lengths growing with the run, not bounded by the batch.
    limit = readers.BATCH_DOCUMENTS
    texts = ["x" if builder == "csv" or i % 3 == 0 else "" for i in range(2 * limit + 3)]
    texts.append("the end")  # (a CSV cell cannot be empty: that is an NA marker)
    path = tmp_path / name
    if builder == "text":
        path.write_text("\n".join(texts) + "\n")
    elif builder == "json":
        path.write_text(jsonl({"text": text} for text in texts))
    elif builder == "csv":
        path.write_text("text\n" + "\n".join(texts) + "\n")
    elif builder == "parquet":
        pq.write_table(pa.table({"text": texts}), path)
    else:
        table = pa.table({"text": texts})
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as out:
            out.write_table(table)
    batches = list(iter_text_batches(DataFile(str(path), name), Reading(builder, "text")))
    assert max(map(len, batches)) <= limit
    assert [text for batch in batches for text in batch.texts()] == texts


# --- work linear in a document's length ----------------------------------------------------

@pytest.mark.parametrize("shape", ["jsonl", "one-line array", "field"])
def test_a_long_json_document_is_parsed_in_work_linear_in_its_length(tmp_path, monkeypatch,
                                                                     shape):
    # The decoder is handed the buffer each time the reader tries the value: each try must
    # bring a share of the value, not one more chunk (7 characters here), so what it parses
    # in all is a few times the value, not its square over the chunk (copies alike: each
    # buffer is built once, then parsed).
    parsed, raw_decode = [], json.JSONDecoder.raw_decode
    monkeypatch.setattr(json.JSONDecoder, "raw_decode", lambda self, s, idx=0: (
        parsed.append(len(s) - idx), raw_decode(self, s, idx))[1])
    long = "A book as one JSON string, \u00e9 \\ \" and all. " * 1000
    rows = [{"text": "short"}, {"text": long, "n": 12345678}, {"text": "after"}]
    text = {"jsonl": jsonl(rows), "one-line array": json.dumps(rows),
            "field": json.dumps({"skipped": [long], "rows": rows})}[shape]
    path = tmp_path / "train.json"
    path.write_text(text)
    got = [document for _, document in jsonfiles.json_documents(
        DataFile(str(path), "train.json"), "text", {"field": "rows"} if shape == "field" else {})]
    assert got == [row["text"] for row in rows]
    assert sum(parsed) < 6 * len(text), f"parsed {sum(parsed):,} characters of {len(text):,}"


SEPARATOR = "<|endoftext|>"


def read_text(path, options: dict, searched: list[int] | None = None) -> list[str]:
    """The documents iter_text reads from `path`; with `searched`, each text it searches for
    documents' ends is counted there: one handed to str.split (paragraphs) or to the
    separator's compiled pattern."""
    if searched is None:
        return [text for chunk in textfiles.iter_text(DataFile(str(path), path.name), options)
                for text in chunk]

    class Counted:
        def __init__(self, pattern):
            self.pattern = pattern

        def split(self, text):
            searched.append(len(text))
            return self.pattern.split(text)

    def count_str_split(frame, event, method):
        if event == "c_call" and getattr(method, "__name__", "") == "split" and isinstance(
                getattr(method, "__self__", None), str):
            searched.append(len(method.__self__))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(textfiles, "re", types.SimpleNamespace(
            **{**vars(re), "compile": lambda *args: Counted(re.compile(*args))}))
        previous = sys.getprofile()
        sys.setprofile(count_str_split)
        try:
            return read_text(path, options)
        finally:
            sys.setprofile(previous)


@pytest.mark.parametrize("options", [{"sample_by": "paragraph"}, {"separator": SEPARATOR}],
                         ids=["paragraph", "separator"])
def test_a_long_paragraph_or_separated_document_is_searched_in_work_linear_in_its_length(
        tmp_path, options):
    # Chunks of a line here (CHUNK_CHARS is 5): each new one must be searched on its own,
    # not with the whole unfinished document before it.
    end = "\n" if "sample_by" in options else f"{SEPARATOR}\n"  # a blank or separator line
    path = tmp_path / "train.txt"
    path.write_text(f"short\n{end}" + "a line of one long document\n" * 2000 + f"{end}after\n")
    searched = []
    got = read_text(path, options, searched)
    assert got[0] == "short" and len(got) == 3 and got[1].count("\n") == 1999
    assert sum(searched) < 3 * path.stat().st_size, f"searched {sum(searched):,} characters"


@pytest.mark.parametrize("options", [{"sample_by": "paragraph"}, {"separator": SEPARATOR},
                                     {"separator": ""}], ids=["paragraph", "separator", "empty"])
def test_documents_are_those_of_the_whole_text_wherever_chunks_end(tmp_path, monkeypatch,
                                                                   options):
    # Blank lines, runs of them and separator lines on both sides of every chunk boundary.
    rng, lines = random.Random(0), ["", "", "a", "b c", SEPARATOR, f"{SEPARATOR}x", " "]
    for i in range(300):
        path = tmp_path / f"{i}.txt"
        path.write_text("\n".join(rng.choices(lines, k=rng.randrange(1, 12)))
                        + rng.choice(["", "\n"]))
        monkeypatch.setattr(textfiles, "CHUNK_CHARS", 1 << 20)
        whole = read_text(path, options)
        for chunk_chars in (1, 2, 5):
            monkeypatch.setattr(textfiles, "CHUNK_CHARS", chunk_chars)
            assert read_text(path, options) == whole, (path.read_text(), chunk_chars)


# --- damaged files and values that are not text ---------------------------------------------

def tokenize(tmp_path, folder, splits=("train",), text_column="text"):
    raw, tokens = tmp_path / "raw", tmp_path / "tokens"
    raw.mkdir()
    materialize(str(folder), "main", list(splits), text_column, raw)
    try:
        tokenize_dataset(raw, tokens, list(splits), text_column, "gpt2", "append", workers=2)
    finally:
        assert not tokens.exists()


@pytest.mark.parametrize("name, compress", [
    ("train.jsonl.gz", lambda b: gzip.compress(b)[:-40]),
    ("train.jsonl.xz", lambda b: lzma.compress(b)[:-40]),
    ("train.jsonl.zst", lambda b: zstd(b)[:200] + bytes(64) + zstd(b)[264:]),
    ("train.jsonl.bz2", lambda b: bz2.compress(b)[:-40])])
def test_a_truncated_or_corrupt_compressed_file_is_named(tmp_path, name, compress):
    rows = jsonl([{"text": f"story {i} " * 20} for i in range(3000)]).encode()
    folder = write(tmp_path / "ds", {name: compress(rows)})
    with pytest.raises(TokbinError, match=rf"{tmp_path}/ds/{name}: truncated or corrupt "
                                          r"compressed file .*download it again"):
        tokenize(tmp_path, folder)


def test_a_value_that_is_not_text_deep_in_a_json_file_names_its_line(tmp_path):
    rows = [{"text": f"story {i}"} for i in range(9999)] + [{"text": ["a", "list"]}]
    folder = write(tmp_path / "ds", {"train.jsonl": jsonl(rows)})
    with pytest.raises(TokbinError, match=rf"{tmp_path}/ds/train.jsonl:10000: 'text' holds a "
                                          r"list \(\[\"a\", \"list\"\]\), not text"):
        tokenize(tmp_path, folder)


def test_an_empty_or_na_csv_cell_names_its_row(tmp_path):
    folder = write(tmp_path / "ds", {"train.csv": "text,n\nfine,1\nNA,2\n"})
    with pytest.raises(TokbinError, match=rf"{tmp_path}/ds/train.csv: row 2: 'text' is empty "
                                          r"or an NA marker .*fill or remove that row"):
        tokenize(tmp_path, folder)


def test_invalid_json_names_its_line(tmp_path):
    folder = write(tmp_path / "ds", {"train.jsonl": '{"text": "ok"}\n{"text": "bad\n'})
    with pytest.raises(TokbinError, match=r"train.jsonl:2: not valid JSON \(Invalid control "):
        tokenize(tmp_path, folder)


@pytest.mark.parametrize("csv, line, what", [
    ("text,b\nok,1\nextra,2,3,4\nz,5\n", 3, "Expected 2 fields in line 3, saw 4"),
    ("text\n" + "a\n" * 10 + '"never closed\nx\n', 12, "EOF inside string starting at row 11"),
    # pandas counts no line break inside a quoted value; the file line does
    ('text,b\n"a\nb\nc",1\nextra,2,3,4\n', 5, "Expected 2 fields in line 3, saw 4"),
    ('text,b\n"a\nb",1\n\nok,2\n"open\n', 6, "EOF inside string starting at row 4")],
    ids=["fields", "eof-in-quotes", "after-quoted-lines", "eof-after-quoted-lines"])
def test_a_csv_parse_error_is_one_line_naming_the_file_line(tmp_path, csv, line, what):
    folder = write(tmp_path / "ds", {"train.csv": csv})
    with pytest.raises(TokbinError) as error:
        tokenize(tmp_path, folder)
    assert str(error.value) == (f"{tmp_path}/ds/train.csv:{line}: not valid CSV ({what}); "
                                "fix the file")


@pytest.mark.parametrize("text", ['{"text": "a"}\n{"text": "b"\n',
                                  '{"text": "a"}\n{"text": "b"\n\n  \n', '{"text": "a"}\n{"text":'])
def test_an_unterminated_last_json_value_names_the_last_line_of_the_file(tmp_path, text):
    folder = write(tmp_path / "ds", {"train.jsonl": text})
    with pytest.raises(TokbinError, match=r"train.jsonl:2: not valid JSON \(.* at the end of the "
                                          r"file\); fix the file"):
        tokenize(tmp_path, folder)


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_a_csv_read_with_the_wrong_separator_suggests_the_configs_sep(tmp_path, sep):
    folder = write(tmp_path / "ds", {"train.csv": f"id{sep}text\n1{sep}a story\n"})
    quoted = re.escape(json.dumps(sep))
    with pytest.raises(TokbinError, match=rf"train.csv: no column 'text': its header .* looks "
                                          rf"{quoted}-separated; set `sep: {quoted}` in the "
                                          "config of the dataset's README.md"):
        tokenize(tmp_path, folder)


def test_a_missing_csv_column_suggests_download_text_column(tmp_path):
    folder = write(tmp_path / "ds", {"train.csv": "id,body\n1,a story\n"})
    with pytest.raises(TokbinError, match=r"train.csv: no column 'text' \(columns: id, body\); "
                                          "set download.text_column"):
        tokenize(tmp_path, folder)


@pytest.mark.parametrize("name, data, line", [
    ("train.jsonl", b'{"text": "ok"}\n{"text": "fine"}\n{"text": "bad \xff\xfe byte"}\n', 3),
    ("train.jsonl.gz", gzip.compress(b'{"text": "ok"}\n{"text": "bad \xff"}\n', mtime=0), 2),
    ("train.csv", b"text\nok\nbad \xff byte\n", 3),
    ("train.csv.zst", zstd(b"text\nok\nbad \xff byte\n"), 3),  # a stream without readline
    ("train.txt.zst", zstd(b"ok\nbad \xff byte\n"), 2)],
    ids=["jsonl", "jsonl.gz", "csv", "csv.zst", "txt.zst"])
def test_invalid_utf8_bytes_in_a_data_file_name_the_file_line_compressed_or_not(tmp_path, name, data, line):
    folder = write(tmp_path / "ds", {name: data})
    with pytest.raises(TokbinError, match=rf"{tmp_path}/ds/{re.escape(name)}:{line}: invalid UTF-8"
                                          r" at byte \d+ of the line; re-encode the file as UTF-8"):
        tokenize(tmp_path, folder)


def test_text_not_valid_in_the_configs_encoding_names_that_encoding(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes("ok\n".encode("utf-16") + b"\x00\xdc")  # a lone low surrogate
    with pytest.raises(TokbinError, match=r"train.txt: not valid utf-16 \(.*\); fix the file or "
                                          "the dataset config's encoding"):
        list(textfiles.iter_text(DataFile(str(path), "train.txt"), {"encoding": "utf-16"}))


def not_utf8_parquet(path, texts: list[bytes]) -> None:
    """A string column holding `texts` as they are: pyarrow writes bytes it never checks."""
    offsets = np.cumsum([0, *map(len, texts)]).astype("int32")
    column = pa.Array.from_buffers(pa.string(), len(texts), [None, pa.py_buffer(offsets),
                                                             pa.py_buffer(b"".join(texts))])
    pq.write_table(pa.table({"text": column}), path, row_group_size=2)


def test_a_json_document_that_is_not_utf8_names_its_file_and_line(tmp_path):
    rows = jsonl([{"text": f"doc {i}"} for i in range(10)]) + '{"text": "lone \\ud800 high"}\n'
    folder = write(tmp_path / "ds", {"a.jsonl": jsonl([{"text": "first file"}]), "b.jsonl": rows})
    with pytest.raises(TokbinError, match=rf"^{tmp_path}/ds/b.jsonl:11: a document is not valid "
                                          r"UTF-8: a lone surrogate .* at byte 5 of it"):
        tokenize(tmp_path, folder)


def test_a_parquet_document_that_is_not_utf8_names_its_file_and_row(tmp_path):
    (tmp_path / "ds").mkdir()
    not_utf8_parquet(tmp_path / "ds" / "train.parquet", [b"good", b"fine", b"ok", b"ba\xffd"])
    with pytest.raises(TokbinError, match=rf"^{tmp_path}/ds/train.parquet: row 4: a document is "
                                          r"not valid UTF-8: invalid start byte at byte 2 of it"):
        tokenize(tmp_path, folder=tmp_path / "ds")
