"""Fetching a dataset's data files from the Hugging Face Hub, pinned to one commit.

The requested revision (branch, tag or sha) is resolved to its commit sha once and every file
is fetched at that sha, so a branch that moves mid-download cannot mix two versions. Only the
configured splits' data files are fetched. `HF_ENDPOINT` and `HF_TOKEN` are honoured as
huggingface_hub honours them.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from tokbin.errors import TokbinError
from tokbin.source import _check_splits_found, select_split_files

OFFLINE_HINT = ("use a local directory instead (download.dataset: path/to/dir, laid out as "
                "data/<split>-*.parquet) or the bundled sample: "
                "`dvc exp run -S download.dataset=./sample`")


def download_hub_files(repo_id: str, revision: str, splits: list[str],
                       out: Path) -> tuple[str, dict[str, list[str]]]:
    from huggingface_hub import HfApi, hf_hub_download, constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    endpoint = constants.ENDPOINT
    try:
        info = HfApi().dataset_info(repo_id, revision=revision, timeout=30)
        sha = info.sha
        names = [s.rfilename for s in info.siblings or []]
        files = {split: select_split_files(names, split) for split in splits}
        _check_splits_found(files, f"Hub dataset {repo_id}@{sha}", names)
        for name in (n for split_files in files.values() for n in split_files):
            hf_hub_download(repo_id, name, repo_type="dataset", revision=sha, local_dir=out)
    except RevisionNotFoundError:
        raise TokbinError(f"revision {revision!r} not found in Hub dataset {repo_id}; set "
                          "download.revision to an existing branch, tag or commit") from None
    except GatedRepoError:
        raise TokbinError(f"Hub dataset {repo_id} is gated: accept its terms on the Hub and "
                          "set HF_TOKEN (or run `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise TokbinError(f"dataset {repo_id!r} not found on the Hub ({endpoint}) and not a "
                          "local directory; check download.dataset (a Hub id such as "
                          "roneneldan/TinyStories, or a path starting with ./ or /)") from None
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
    if len(sha or "") != 40:
        raise TokbinError(f"the Hub returned no commit sha for {repo_id}@{revision}")
    shutil.rmtree(out / ".cache", ignore_errors=True)  # huggingface_hub's local_dir bookkeeping
    return sha, files
