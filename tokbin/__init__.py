"""tokbin: text dataset -> GPT token bins (DVC pipeline) and a loader that feeds them to training."""
from tokbin.errors import TokbinError
from tokbin.format import Meta, read_meta

__all__ = ["TokbinError", "Meta", "read_meta"]
