"""tokbin: text dataset -> GPT token bins (DVC pipeline) and a loader that feeds them to training."""
from tokbin.errors import TokbinError

__all__ = ["TokbinError", "Meta", "read_meta", "BinLoader", "Documents", "pinned_path",
           "pinned_loader"]


def __getattr__(name: str):
    # Imported on first use: `import tokbin` (and every pipeline stage, which imports a tokbin
    # module and so this package) loads none of torch, DVC or the format's dependencies.
    if name in ("Meta", "read_meta"):
        from tokbin import format
        return getattr(format, name)
    if name == "BinLoader":
        from tokbin.loader import BinLoader
        return BinLoader
    if name == "Documents":
        from tokbin.batches import Documents
        return Documents
    if name in ("pinned_path", "pinned_loader"):
        from tokbin import pinned
        return getattr(pinned, name)
    raise AttributeError(f"module 'tokbin' has no attribute {name!r}")
