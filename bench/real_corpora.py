"""Real-text corpora from what a Debian machine holds, as Hub-layout parquet datasets.

    python -m bench.real_corpora --install     # apt-get the documentation packages (root)
    python -m bench.real_corpora --out DIR [--max-mb 160] [--only gettext html_text ...]

bench/bench_real_text.py runs both (its --setup); nothing here runs in CI.

Each corpus is <out>/<name>/data/train-0000i-of-0000n.parquet (files of ~64 MB of text, row
groups of ~4 MB) and data/validation-00000-of-00001.parquet (about 1% of the documents), with
one column `text`; a document is one file (decompressed), in an order fixed by a hash of its
path, so a rerun on the same machine writes the same bytes. Files that are not UTF-8 are
skipped; a corpus stops at --max-mb of text.

Corpora (what the issue's real text is made of):
  debian_docs     /usr/share/doc: changelogs, copyright files, NEWS, READMEs (not HTML)
  man_pages       /usr/share/man: roff sources of every man page, every language
  gettext         /usr/share/locale*/**/*.mo as PO text (msgunfmt)
  python_sources  *.py of the standard library, dist-packages and this venv's site-packages
  c_headers       /usr/include
  html_text       the text of every HTML page under /usr/share/doc (Python's docs, the
                  Debian handbook and reference in several languages), as a browser shows it
  json_yaml       *.json, *.json.gz, *.yaml, *.yml under site-packages and /usr/share
  cldr_emoji      Unicode CLDR XML (locale data and emoji annotations in every script) and
                  the emoji data files: emoji, U+00A0/U+202F-heavy number formats
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import html
import html.parser
import os
import re
import subprocess
import sysconfig
from pathlib import Path
from typing import Callable, Iterator

PACKAGES = ["python3.11-doc", "debian-handbook", "debian-reference-en", "debian-reference-fr",
            "debian-reference-ja", "debian-reference-zh-cn", "debian-reference-de",
            "debian-reference-es", "debian-reference-it", "manpages-de", "manpages-fr",
            "manpages-ja", "manpages-ru", "manpages-pl", "manpages-es", "manpages-it",
            "manpages-zh", "manpages-pt-br", "manpages-uk", "gettext", "unicode-cldr-core",
            "unicode-data"]
FILE_TEXT_MB = 64
ROW_GROUP_MB = 4
HTML_SUFFIXES = (".html", ".htm", ".xhtml")


def files_under(roots, accept: Callable[[Path], bool]) -> list[Path]:
    found = set()
    for root in map(Path, roots):
        if not root.exists():
            continue
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                if path.is_file() and not path.is_symlink() and accept(path):
                    found.add(path)
    return sorted(found)


def read_text(path: Path) -> str | None:
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            return None
    if b"\x00" in data[:4096]:
        return None  # binary
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _TextOfHtml(html.parser.HTMLParser):
    """The text a browser shows: no script or style, a newline after each block element."""
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt",
              "dd", "table", "section", "blockquote", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_text(path: Path) -> str | None:
    source = read_text(path)
    if source is None:
        return None
    parser = _TextOfHtml()
    parser.feed(source)
    text = "".join(parser.parts)
    text = re.sub(r"[ \t]+\n", "\n", text)  # what a browser's copy would not hold
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def mo_as_po(path: Path) -> str | None:
    run = subprocess.run(["msgunfmt", str(path)], capture_output=True)
    if run.returncode:
        return None
    try:
        return run.stdout.decode("utf-8")
    except UnicodeDecodeError:
        return None


def site_packages() -> list[str]:
    return sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})


def corpus_sources() -> dict[str, tuple[list[Path], Callable[[Path], str | None]]]:
    python_roots = ["/usr/lib/python3.11", "/usr/lib/python3/dist-packages", *site_packages()]
    return {
        "debian_docs": (files_under(["/usr/share/doc"], lambda p: not p.name.endswith(
            HTML_SUFFIXES) and "/html/" not in str(p) and p.suffix not in (
            ".png", ".jpg", ".gif", ".svg", ".pdf", ".js", ".css", ".inv", ".woff", ".woff2",
            ".ttf", ".eot", ".ico", ".bz2", ".xz", ".zip")), read_text),
        "man_pages": (files_under(["/usr/share/man"], lambda p: True), read_text),
        "gettext": (files_under(["/usr/share/locale", "/usr/share/locale-langpack"],
                                lambda p: p.suffix == ".mo"), mo_as_po),
        "python_sources": (files_under(python_roots, lambda p: p.suffix == ".py"), read_text),
        "c_headers": (files_under(["/usr/include"], lambda p: True), read_text),
        "html_text": (files_under(["/usr/share/doc"], lambda p: p.name.endswith(
            HTML_SUFFIXES)), html_text),
        "json_yaml": (files_under([*site_packages(), "/usr/share"], lambda p: p.name.endswith(
            (".json", ".json.gz", ".yaml", ".yml"))), read_text),
        "cldr_emoji": (files_under(["/usr/share/unicode/cldr", "/usr/share/unicode/emoji"],
                                   lambda p: p.suffix in (".xml", ".txt")), read_text),
    }


def documents(paths: list[Path], read, max_bytes: int) -> Iterator[str]:
    """The texts of `paths` in an order fixed by their paths' hashes, up to max_bytes."""
    total = 0
    for path in sorted(paths, key=lambda p: hashlib.sha256(str(p).encode()).digest()):
        text = read(path)
        if not text:
            continue
        yield text
        total += len(text.encode("utf-8"))
        if total >= max_bytes:
            return


def write_dataset(out: Path, texts: list[str]) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq
    (out / "data").mkdir(parents=True, exist_ok=True)
    validation = [t for i, t in enumerate(texts) if i % 100 == 50] or texts[:1]
    train = [t for i, t in enumerate(texts) if i % 100 != 50]
    sizes = [len(t.encode("utf-8")) for t in train]
    files = max(1, round(sum(sizes) / (FILE_TEXT_MB << 20)))
    per_file = [[] for _ in range(files)]
    done = 0
    for text, size in zip(train, sizes):
        per_file[min(files - 1, done * files // max(sum(sizes), 1))].append(text)
        done += size
    plan = [(f"train-{i:05d}-of-{files:05d}", part) for i, part in enumerate(per_file)]
    plan.append(("validation-00000-of-00001", validation))
    for name, part in plan:
        schema = pa.schema([("text", pa.string())])
        with pq.ParquetWriter(out / "data" / f"{name}.parquet", schema) as writer:
            group, group_bytes = [], 0
            for text in part:
                group.append(text)
                group_bytes += len(text)
                if group_bytes >= ROW_GROUP_MB << 20:
                    writer.write_table(pa.table({"text": group}, schema=schema))
                    group, group_bytes = [], 0
            if group or not part:
                writer.write_table(pa.table({"text": group}, schema=schema))
    return {"documents": len(texts), "bytes": sum(sizes) + sum(len(t.encode()) for t in
                                                                validation),
            "files": files}


def install() -> None:
    """apt-get the packages whose files the corpora are made of (needs root)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
                   check=True, env=env)


def build(out: Path, max_mb: float = 160, only: list[str] | None = None) -> None:
    """Writes each corpus (all, or those in `only`) under `out`."""
    for name, (paths, read) in corpus_sources().items():
        if only and name not in only:
            continue
        texts = list(documents(paths, read, int(max_mb * 2**20)))
        info = write_dataset(out / name, texts)
        print(f"{name}: {info['documents']:,} documents, {info['bytes'] / 2**20:.1f} MB, "
              f"{info['files']} train files ({len(paths):,} candidate files)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--max-mb", type=float, default=160)
    parser.add_argument("--only", nargs="+")
    parser.add_argument("--install", action="store_true", help="apt-get install the packages")
    args = parser.parse_args()
    if args.install:
        install()
    if args.out:
        build(args.out, args.max_mb, args.only)


if __name__ == "__main__":
    main()
