"""`lmforge export --push-to-hub`: the calls made once the folder is complete, and clear errors offline or
without a token (nothing here reaches the network)."""

from __future__ import annotations

import os
import subprocess

import pytest

from lmforge.errors import LmforgeError
from lmforge.infer.hub import push_folder

from cli_runs import LMFORGE


class RecordingApi:
    """Stands in for huggingface_hub.HfApi at the network boundary: records what lmforge asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return f"https://huggingface.co/{kwargs['repo_id']}"

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_creates_the_repository_and_uploads_the_folder(tmp_path, monkeypatch):
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is set for this test process; the offline refusal is tested below")
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    api = RecordingApi()
    url = push_folder(tmp_path, "me/tiny", private=True, api=api)
    assert url == "https://huggingface.co/me/tiny"
    assert api.calls == [
        ("create_repo", {"repo_id": "me/tiny", "repo_type": "model", "private": True, "exist_ok": True}),
        (
            "upload_folder",
            {
                "repo_id": "me/tiny",
                "repo_type": "model",
                "folder_path": str(tmp_path),
                "commit_message": "Upload a model exported with lmforge",
            },
        ),
    ]
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no saved login either
    with pytest.raises(LmforgeError, match="no Hugging Face token; set HF_TOKEN or run `hf auth login`"):
        push_folder(tmp_path, "me/tiny", api=RecordingApi())


def test_export_offline_says_so_and_keeps_the_folder(tmp_path, tiny_model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_test_token"}
    command = [*LMFORGE, "export", str(tiny_model_dir), "--out", "out", "--push-to-hub", "me/tiny"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert "--push-to-hub me/tiny: HF_HUB_OFFLINE is set" in done.stderr
    assert (tmp_path / "out" / "model.safetensors").is_file() and (tmp_path / "out" / "README.md").is_file()
    assert "me/tiny" in (tmp_path / "out" / "README.md").read_text()  # the card loads it by its hub name
