"""binarize: TOKENS_DIR -> the final bins (one per split, named on the command line), each
split's document index (<split>.docs) and meta.json beside them, reports/metrics.json and the
document-length plots.

    python -m stages.binarize data/tokens data/train.bin data/validation.bin --reports reports
        # params: binarize.dtype, binarize.format, binarize.shard_tokens
"""
import argparse
import time
from pathlib import Path

from tokbin.binarize import binarize, binarize_stage, check_outputs
from tokbin.format import read_meta
from tokbin.params import load_params
from tokbin.reports import write_reports
from tokbin.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.binarize")
    parser.add_argument("tokens_dir", type=Path, help="the tokenize stage's output (data/tokens)")
    parser.add_argument("bins", type=Path, nargs="+",
                        help="one output per split: data/<split>.bin, or a shard directory "
                             "data/<split> with binarize.shard_tokens > 0")
    parser.add_argument("--reports", type=Path, required=True, help="where metrics and plots go")
    args = parser.parse_args()
    params = load_params().binarize
    dvc_yaml = Path("dvc.yaml")  # DVC runs the stage from the project's root
    outs = binarize_stage(dvc_yaml)[1] if dvc_yaml.is_file() else None
    out_dir = check_outputs(args.bins, list(read_meta(args.tokens_dir).splits),
                            params.shard_tokens, outs)
    started = time.perf_counter()
    meta = binarize(args.tokens_dir, out_dir, params.dtype, params.shard_tokens, params.format)
    seconds = time.perf_counter() - started
    write_reports(meta, args.tokens_dir, args.reports / "metrics.json",
                  args.reports / "doc_lengths", args.reports / "plots")
    produced = sum(s.bytes for s in meta.splits.values())
    linked = 0
    for split, info in meta.splits.items():
        how = f" ({len(info.shards)} shards)" if info.shards else ""
        tokens_file = args.tokens_dir / info.file
        if not info.shards and (out_dir / info.file).samefile(tokens_file):
            linked += info.bytes
            how = f" (ids checked, hard-linked from {tokens_file}: same bytes)"
        print(f"binarize: {split}: {info.tokens:,} {meta.dtype} tokens, "
              f"{info.documents:,} documents -> {out_dir / info.file}{how}, "
              f"{out_dir / info.docs} ({meta.bin_format})")
    print(f"binarize: {produced / 1e6:.1f} MB ({(produced - linked) / 1e6:.1f} MB copied, "
          f"{linked / 1e6:.1f} MB linked) in {seconds:.2f} s "
          f"({produced / 1e6 / max(seconds, 1e-9):.0f} MB/s)")


if __name__ == "__main__":
    run_stage("binarize", main)
