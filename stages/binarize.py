"""binarize: data/tokens -> data/<split>.bin + data/meta.json, reports/metrics.json and the
document-length plots in reports/doc_lengths/.

    python -m stages.binarize      # params: binarize.dtype
"""
import time
from pathlib import Path

from tokbin.binarize import binarize, write_reports
from tokbin.format import remove_stale_temps
from tokbin.params import load_params
from tokbin.stage import run_stage

TOKENS_DIR, DATA_DIR, REPORTS_DIR = Path("data/tokens"), Path("data"), Path("reports")


def main() -> None:
    params = load_params().binarize
    remove_stale_temps(DATA_DIR)
    started = time.perf_counter()
    meta = binarize(TOKENS_DIR, DATA_DIR, params.dtype)
    seconds = time.perf_counter() - started
    write_reports(meta, TOKENS_DIR, REPORTS_DIR / "metrics.json", REPORTS_DIR / "doc_lengths")
    written = sum(s.bytes for s in meta.splits.values())
    for split, info in meta.splits.items():
        print(f"binarize: {split}: {info.tokens:,} {meta.dtype} tokens, "
              f"{info.documents:,} documents -> data/{info.file}")
    print(f"binarize: {written / 1e6:.1f} MB in {seconds:.2f} s "
          f"({written / 1e6 / max(seconds, 1e-9):.0f} MB/s)")


if __name__ == "__main__":
    run_stage("binarize", main)
