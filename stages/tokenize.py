"""tokenize: encode every document of data/raw with the configured engine into data/tokens.

    python -m stages.tokenize      # params: download.splits, download.text_column, tokenize.*
                                   # workers: TOKBIN_WORKERS (default: all cores)
"""
import time
from pathlib import Path

from tokbin.format import remove_stale_temps
from tokbin.params import load_params
from tokbin.stage import run_stage
from tokbin.tokenize import tokenize_dataset

RAW_DIR, TOKENS_DIR = Path("data/raw"), Path("data/tokens")


def main() -> None:
    params = load_params()
    remove_stale_temps(TOKENS_DIR.parent)
    started = time.perf_counter()
    meta = tokenize_dataset(RAW_DIR, TOKENS_DIR, params.download.splits,
                            params.download.text_column, params.tokenize.encoding,
                            params.tokenize.eot, params.tokenize.engine,
                            executor=params.tokenize.executor)
    seconds = time.perf_counter() - started
    tokens = sum(s.tokens for s in meta.splits.values())
    print(f"tokenize: {tokens:,} tokens in {seconds:.1f} s ({tokens / seconds / 1e6:.2f} M tokens/s)")


if __name__ == "__main__":
    run_stage("tokenize", main)
