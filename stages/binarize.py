"""binarize: data/tokens -> data/<split>.bin + data/meta.json, reports/metrics.json and the
document-length plots in reports/doc_lengths/.

    python -m stages.binarize      # params: binarize.dtype, binarize.shard_tokens
"""
import time
from pathlib import Path

import yaml

from tokbin.binarize import binarize, write_reports
from tokbin.errors import TokbinError
from tokbin.format import read_meta, remove_stale_temps
from tokbin.params import load_params
from tokbin.stage import run_stage

TOKENS_DIR, DATA_DIR, REPORTS_DIR = Path("data/tokens"), Path("data"), Path("reports")


def main() -> None:
    params = load_params().binarize
    remove_stale_temps(DATA_DIR)
    check_dvc_outs(list(read_meta(TOKENS_DIR).splits), params.shard_tokens)
    started = time.perf_counter()
    meta = binarize(TOKENS_DIR, DATA_DIR, params.dtype, params.shard_tokens)
    seconds = time.perf_counter() - started
    write_reports(meta, TOKENS_DIR, REPORTS_DIR / "metrics.json", REPORTS_DIR / "doc_lengths")
    produced = sum(s.bytes for s in meta.splits.values())
    linked = 0
    for split, info in meta.splits.items():
        how = f" ({len(info.shards)} shards)" if info.shards else ""
        if not info.shards and (DATA_DIR / info.file).samefile(TOKENS_DIR / info.file):
            linked += info.bytes
            how = f" (ids checked, hard-linked from {TOKENS_DIR / info.file}: same bytes)"
        print(f"binarize: {split}: {info.tokens:,} {meta.dtype} tokens, "
              f"{info.documents:,} documents -> data/{info.file}{how}")
    print(f"binarize: {produced / 1e6:.1f} MB ({(produced - linked) / 1e6:.1f} MB copied, "
          f"{linked / 1e6:.1f} MB linked) in {seconds:.2f} s "
          f"({produced / 1e6 / max(seconds, 1e-9):.0f} MB/s)")


def check_dvc_outs(splits: list[str], shard_tokens: int, dvc_yaml=Path("dvc.yaml")) -> None:
    """Fails before any work when dvc.yaml's binarize outs are not the layout shard_tokens
    gives (data/<split>.bin, or data/<split> shard directories): DVC itself would only say, after
    the run, that an output does not exist."""
    if not dvc_yaml.exists():  # run by hand outside the pipeline
        return
    stage = yaml.safe_load(dvc_yaml.read_text()).get("stages", {}).get("binarize", {})
    declared = {out if isinstance(out, str) else next(iter(out)) for out in stage.get("outs", [])}
    layout = [f"data/{split}" if shard_tokens else f"data/{split}.bin" for split in splits]
    other = [f"data/{split}.bin" if shard_tokens else f"data/{split}" for split in splits]
    if not set(layout) <= declared:
        raise TokbinError(f"binarize.shard_tokens is {shard_tokens}, so binarize writes "
                          f"{', '.join(layout)}, but dvc.yaml's binarize outs are "
                          f"{', '.join(sorted(declared))}; in dvc.yaml replace "
                          f"{', '.join(other)} with {', '.join(layout)} (docs/scale_out.md)")


if __name__ == "__main__":
    run_stage("binarize", main)
