"""The Hugging Face Hub: resolve a dataset revision to its commit, fetch some of its files.

The requested revision (branch, tag or sha) is resolved to its commit sha once and every file
is fetched at that sha, so a branch that moves mid-download cannot mix two versions. Files
are fetched by huggingface_hub's own parallel download, with its progress bar.
`HF_ENDPOINT` and `HF_TOKEN` are honoured as huggingface_hub honours them.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Iterator

from tokbin.errors import TokbinError

OFFLINE_HINT = ("use a local directory instead (download.dataset: ./path/to/dir, laid out like "
                "a Hub dataset repo) or the bundled sample: "
                "`dvc exp run -S download.dataset=./sample`")
FETCH_WORKERS = 8  # files downloaded at once


def resolve(repo_id: str, revision: str) -> str:
    """The commit sha `revision` names in Hub dataset `repo_id`."""
    from huggingface_hub import HfApi
    with hub_errors(repo_id, revision):
        info = HfApi().dataset_info(repo_id, revision=revision, timeout=30)
    if len(info.sha or "") != 40:
        raise TokbinError(f"the Hub returned no commit sha for {repo_id}@{revision}")
    return info.sha


def fetch(repo_id: str, sha: str, names: list[str], out: Path) -> None:
    """Downloads `names` of `repo_id` at commit `sha` into `out`, at their repo paths, several
    at once."""
    from huggingface_hub import snapshot_download
    with hub_errors(repo_id, sha):
        snapshot_download(repo_id, repo_type="dataset", revision=sha, local_dir=out,
                          allow_patterns=[_literal(name) for name in dict.fromkeys(names)],
                          max_workers=FETCH_WORKERS)
    shutil.rmtree(out / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping
    missing = [name for name in names if not (out / name).is_file()]
    if missing:
        raise TokbinError(f"the Hub did not serve {missing[0]} of {repo_id}@{sha} (and "
                          f"{len(missing) - 1} more); rerun, or check the repo")


def _literal(name: str) -> str:
    """`name` as an fnmatch pattern that matches only itself (allow_patterns are fnmatch)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str) -> Iterator[None]:
    """huggingface_hub's errors as TokbinErrors that say what to change."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    endpoint = constants.ENDPOINT
    try:
        yield
    except RevisionNotFoundError:
        raise TokbinError(f"revision {revision!r} not found in Hub dataset {repo_id}; set "
                          "download.revision to an existing branch, tag or commit") from None
    except GatedRepoError:
        raise TokbinError(f"Hub dataset {repo_id} is gated: accept its terms on the Hub and "
                          "set HF_TOKEN (or run `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise TokbinError(f"dataset {repo_id!r} not found on the Hub ({endpoint}) and not a "
                          "local directory; check download.dataset (a Hub id such as "
                          "roneneldan/TinyStories, or a path starting with ./ or /; a gated "
                          "or private dataset needs HF_TOKEN)") from None
    except OfflineModeIsEnabled:
        raise TokbinError(f"HF_HUB_OFFLINE is set, so Hub dataset {repo_id} cannot be "
                          f"downloaded; {OFFLINE_HINT}") from None
    except HfHubHTTPError as e:
        raise TokbinError(f"the Hub ({endpoint}) answered an error for {repo_id}: {e}") from None
    except (OSError, ConnectionError) as e:
        raise TokbinError(f"the Hugging Face Hub ({endpoint}) is unreachable ({type(e).__name__}"
                          f": {e}); {OFFLINE_HINT}") from None
    except Exception as e:  # httpx/requests transport errors have no common base we can import
        if "connect" in type(e).__name__.lower() or "timeout" in type(e).__name__.lower():
            raise TokbinError(f"the Hugging Face Hub ({endpoint}) is unreachable "
                              f"({type(e).__name__}: {e}); {OFFLINE_HINT}") from None
        raise
