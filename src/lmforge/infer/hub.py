"""`lmforge export --push-to-hub REPO_ID`: a complete export folder uploaded to a Hugging Face model repository.

The token is huggingface_hub's own (HF_TOKEN, else the user's `hf auth login`). The repository is created
when absent (private with --private; an existing one keeps its visibility) and the folder is uploaded in one
commit. `api` is an `HfApi`-like object; tests pass one that records the calls instead of sending them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.console import say
from lmforge.errors import LmforgeError


def push_folder(folder: Path, repo_id: str, private: bool = False, api: Any = None) -> str:
    """Upload `folder` to the model repository `repo_id`; return the repository's URL."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise LmforgeError(
            f"--push-to-hub {repo_id}: HF_HUB_OFFLINE is set, so nothing can be uploaded; the export in {folder} "
            "is complete: unset HF_HUB_OFFLINE and push it with `hf upload`, or export again"
        )
    token = get_token()
    if token is None:
        raise LmforgeError(
            f"--push-to-hub {repo_id}: no Hugging Face token; set HF_TOKEN or run `hf auth login` (the export in "
            f"{folder} is complete)"
        )
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    say(f"lmforge: export: uploading {folder} to https://huggingface.co/{repo_id}")
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(folder),
            commit_message="Upload a model exported with lmforge",
        )
    except (OSError, ValueError) as err:  # huggingface_hub's HTTP errors, offline mode and bad repo ids
        raise LmforgeError(
            f"--push-to-hub {repo_id}: the upload failed ({type(err).__name__}: {err}); the export in {folder} is "
            "complete: check the repository id, your token's write access and the network, then push it with "
            "`hf upload`"
        ) from None
    say(f"lmforge: export: pushed to {url}")
    return str(url)
