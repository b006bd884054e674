"""download: fetch the configured splits' data files into data/raw (Hub layout + source.json).

    python -m stages.download      # params: download.*
"""
from pathlib import Path

from tokbin.format import atomic_path, remove_stale_temps
from tokbin.params import load_params
from tokbin.source import materialize
from tokbin.stage import run_stage

RAW_DIR = Path("data/raw")


def main() -> None:
    params = load_params().download
    remove_stale_temps(RAW_DIR.parent)
    with atomic_path(RAW_DIR) as tmp:
        tmp.mkdir(parents=True)
        record = materialize(params.dataset, params.revision, params.splits,
                             params.text_column, tmp)
    at = f" at {record['sha']}" if record["sha"] else ""
    for split, files in record["files"].items():
        print(f"download: {split}: {len(files)} file(s) from {params.dataset}{at}")


if __name__ == "__main__":
    run_stage("download", main)
