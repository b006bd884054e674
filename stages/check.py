"""check: params.yaml (and the bins dvc.yaml's binarize names) checked before any stage runs
(tokbin.preflight).

    python -m stages.check data/params.ok --tokenizers tokenizers   # params: all of params.yaml

Writes OK (the same bytes whenever the checks pass), which every other stage depends on: so it
runs first, and a valid change never makes a stage rerun through it.
"""
import argparse
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.fsio import write_text_atomic
from tokbin.preflight import OK_TEXT, check_pipeline, exp_run_hint
from tokbin.stage import run_stage


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m stages.check")
    parser.add_argument("ok", type=Path, help="written when the checks pass (data/params.ok)")
    parser.add_argument("--tokenizers", type=Path, required=True,
                        help="the folder a local tokenizer file must be in (as tokenize's)")
    args = parser.parse_args()
    try:
        check_pipeline(tokenizers=args.tokenizers)
    except TokbinError as e:
        raise TokbinError(f"{e}{exp_run_hint()}. (No stage ran: every output is as it was.)"
                          ) from None
    args.ok.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.ok, OK_TEXT)


if __name__ == "__main__":
    run_stage("check", main)
