"""tokenize: encode every document of RAW_DIR with the configured engine into TOKENS_DIR.

    python -m stages.tokenize data/raw data/tokens --tokenizers tokenizers
        # params: download.splits, .text_column, .sample_by, .separator, .holdout, tokenize.*
        # a local tokenizer file (tokenize.encoding) must be inside the --tokenizers folder
        # workers: TOKBIN_WORKERS (default: all cores)
"""
import argparse
import time
from pathlib import Path

from tokbin.params import load_params
from tokbin.stage import run_stage
from tokbin.tokenize import tokenize_dataset
from tokbin.tokenizer_spec import resolve_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.tokenize")
    parser.add_argument("raw_dir", type=Path, help="the download stage's output (data/raw)")
    parser.add_argument("tokens_dir", type=Path, help="where the compact bins go (data/tokens)")
    parser.add_argument("--tokenizers", type=Path, required=True,
                        help="the folder a local tokenizer file must be in: a dependency of "
                             "this stage in dvc.yaml, so a changed file reruns it")
    args = parser.parse_args()
    params = load_params()
    download = params.download
    started = time.perf_counter()
    settings = params.tokenize
    tokenizer = resolve_tokenizer(settings.encoding, settings.eot_token, settings.pattern,
                                  settings.special_tokens, tracked_folder=args.tokenizers)
    meta = tokenize_dataset(args.raw_dir, args.tokens_dir, download.bins, download.text_column,
                            tokenizer, settings.eot, settings.engine,
                            executor=settings.executor, sample_by=download.sample_by,
                            separator=download.separator, holdout=download.holdout)
    seconds = time.perf_counter() - started
    tokens = sum(s.tokens for s in meta.splits.values())
    print(f"tokenize: {tokens:,} tokens in {seconds:.1f} s "
          f"({tokens / seconds / 1e6:.2f} M tokens/s)")


if __name__ == "__main__":
    run_stage("tokenize", main)
