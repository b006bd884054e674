"""download: fetch the configured splits' data files into RAW_DIR (Hub layout + source.json),
or, with download.materialize: false, record them in RAW_DIR/source.json alone.

    python -m stages.download data/raw
        # params: download.dataset, .config, .revision, .materialize, .data_files, .splits,
        #         .text_column
"""
import argparse
from pathlib import Path

from tokbin.fsio import atomic_path
from tokbin.params import load_params
from tokbin.source import materialize
from tokbin.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.download")
    parser.add_argument("raw_dir", type=Path, help="where the data files go (data/raw)")
    raw_dir = parser.parse_args().raw_dir
    params = load_params().download
    with atomic_path(raw_dir) as tmp:
        tmp.mkdir(parents=True)
        record = materialize(params.dataset, params.revision, params.bins, params.text_column,
                             tmp, config=params.config, data_files=params.data_files_by_split,
                             copy=params.materialize)
    at = f" at {record.sha}" if record.sha else ""
    print(f"download: {params.dataset}{at}, config {record.config!r}, read as {record.builder}")
    for bin_name, split in record.splits.items():
        print(f"download: {bin_name}: split {split!r}, {len(record.files[split])} file(s)")
    if record.stream is not None:
        size = sum(f.size for f in record.stream.files.values())
        print(f"download: {len(record.stream.files)} file(s), {size / 1e9:.2f} GB, recorded "
              f"in {raw_dir}/source.json, not copied: tokenize reads them from "
              f"{record.stream.url}")


if __name__ == "__main__":
    run_stage("download", main)
