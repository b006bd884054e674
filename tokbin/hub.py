"""The Hugging Face Hub: resolve a dataset revision to its commit, fetch some of its files; and
fetch a model repo's tokenizer files at a resolved commit.

The requested revision (branch, tag or sha) is resolved to its commit sha once and every file
is fetched at that sha, so a branch that moves mid-download cannot mix two versions. Files
are fetched by huggingface_hub's own parallel download, with its progress bar.
`HF_ENDPOINT` and `HF_TOKEN` are honoured as huggingface_hub honours them.
"""
from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tokbin.errors import TokbinError

OFFLINE_HINT = ("use a local directory instead (download.dataset: ./path/to/dir, laid out like "
                "a Hub dataset repo) or the bundled sample: "
                "`dvc exp run -S download.dataset=./sample`")
FETCH_WORKERS = 8  # files downloaded at once


@dataclass(frozen=True)
class HubTarget:
    """What a Hub request is for, in the words of the params key that asked for it."""
    repo_type: str     # dataset | model
    repo_key: str      # the params key naming the repo
    revision_key: str  # the params key naming the revision
    offline_hint: str
    not_found: str = ""  # what else the name was not, when the Hub has no such repo


DATASET = HubTarget("dataset", "download.dataset (a Hub id such as roneneldan/TinyStories, or "
                    "a path starting with ./ or /; a gated or private dataset needs HF_TOKEN)",
                    "download.revision", OFFLINE_HINT, " and not a local directory")
MODEL = HubTarget("model", "tokenize.encoding (hf:<owner>/<model>; a gated or private model "
                  "needs HF_TOKEN)", "tokenize.encoding (hf:<model id>@<revision>)",
                  "save the model's tokenizer.json in tokenizers/ and set tokenize.encoding to "
                  "its path")


def resolve(repo_id: str, revision: str) -> str:
    """The commit sha `revision` names in Hub dataset `repo_id`."""
    return _repo_info(repo_id, revision, DATASET).sha


def resolve_model(repo_id: str, revision: str) -> tuple[str, list[str]]:
    """The commit sha `revision` names in Hub model `repo_id`, and the repo's file names."""
    info = _repo_info(repo_id, revision, MODEL)
    return info.sha, [s.rfilename for s in info.siblings or []]


def _repo_info(repo_id: str, revision: str, target: HubTarget):
    from huggingface_hub import HfApi
    with hub_errors(repo_id, revision, target):
        info = HfApi().repo_info(repo_id, revision=revision, repo_type=target.repo_type,
                                 timeout=30)
    if len(info.sha or "") != 40:
        raise TokbinError(f"the Hub returned no commit sha for {repo_id}@{revision}")
    return info


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


def fetch_model_file(repo_id: str, sha: str, name: str) -> Path:
    """`name` of Hub model `repo_id` at commit `sha`, in huggingface_hub's cache (a later call
    finds it there, offline too)."""
    from huggingface_hub import hf_hub_download
    with hub_errors(repo_id, sha, MODEL):
        return Path(hf_hub_download(repo_id, name, revision=sha))


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str, target: HubTarget = DATASET
               ) -> Iterator[None]:
    """huggingface_hub's errors as TokbinErrors that say what to change."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    endpoint, kind = constants.ENDPOINT, target.repo_type
    try:
        yield
    except RevisionNotFoundError:
        raise TokbinError(f"revision {revision!r} not found in Hub {kind} {repo_id}; set "
                          f"{target.revision_key} to an existing branch, tag or "
                          "commit") from None
    except GatedRepoError:
        raise TokbinError(f"Hub {kind} {repo_id} is gated: accept its terms on the Hub and "
                          "set HF_TOKEN (or run `hf auth login`)") from None
    except RepositoryNotFoundError:
        raise TokbinError(f"{kind} {repo_id!r} not found on the Hub ({endpoint})"
                          f"{target.not_found}; check {target.repo_key}") from None
    except OfflineModeIsEnabled:
        raise TokbinError(f"HF_HUB_OFFLINE is set, so Hub {kind} {repo_id} cannot be "
                          f"downloaded; {target.offline_hint}") from None
    except HfHubHTTPError as e:
        raise TokbinError(f"the Hub ({endpoint}) answered an error for {repo_id}: {e}") from None
    except (OSError, ConnectionError) as e:
        raise TokbinError(f"the Hugging Face Hub ({endpoint}) is unreachable ({type(e).__name__}"
                          f": {e}); {target.offline_hint}") from None
    except Exception as e:  # httpx/requests transport errors have no common base we can import
        if "connect" in type(e).__name__.lower() or "timeout" in type(e).__name__.lower():
            raise TokbinError(f"the Hugging Face Hub ({endpoint}) is unreachable "
                              f"({type(e).__name__}: {e}); {target.offline_hint}") from None
        raise
