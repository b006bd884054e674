"""tokbin: text dataset -> GPT token bins (DVC pipeline) and a loader that feeds them to training."""
from tokbin.errors import TokbinError
from tokbin.format import Meta, read_meta
from tokbin.pinned import pinned_loader, pinned_path

__all__ = ["TokbinError", "Meta", "read_meta", "BinLoader", "pinned_path", "pinned_loader"]


def __getattr__(name: str):
    # BinLoader needs torch: import it on first use so `import tokbin` and the pipeline stages
    # stay torch-free.
    if name == "BinLoader":
        from tokbin.loader import BinLoader
        return BinLoader
    raise AttributeError(f"module 'tokbin' has no attribute {name!r}")
