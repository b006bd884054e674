"""tokenize: encode every document of RAW_DIR with the configured engine into TOKENS_DIR.

    python -m stages.tokenize data/raw data/tokens
        # params: download.splits, .text_column, .sample_by, .separator, .holdout, tokenize.*
        # workers: TOKBIN_WORKERS (default: all cores)
"""
import argparse
import time
from pathlib import Path

from tokbin.fsio import remove_stale_temps
from tokbin.params import load_params
from tokbin.stage import run_stage
from tokbin.tokenize import tokenize_dataset


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.tokenize")
    parser.add_argument("raw_dir", type=Path, help="the download stage's output (data/raw)")
    parser.add_argument("tokens_dir", type=Path, help="where the compact bins go (data/tokens)")
    args = parser.parse_args()
    params = load_params()
    download = params.download
    remove_stale_temps(args.tokens_dir.parent)
    started = time.perf_counter()
    meta = tokenize_dataset(args.raw_dir, args.tokens_dir, download.bins, download.text_column,
                            params.tokenize.encoding, params.tokenize.eot,
                            params.tokenize.engine, executor=params.tokenize.executor,
                            sample_by=download.sample_by, separator=download.separator,
                            holdout=download.holdout)
    seconds = time.perf_counter() - started
    tokens = sum(s.tokens for s in meta.splits.values())
    print(f"tokenize: {tokens:,} tokens in {seconds:.1f} s "
          f"({tokens / seconds / 1e6:.2f} M tokens/s)")


if __name__ == "__main__":
    run_stage("tokenize", main)
