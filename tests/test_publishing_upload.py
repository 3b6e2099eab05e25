"""`tips-publish`: a real push, recorded through a fake `HfApi` (nothing touches the network), from the library
and the CLI, and an upload failure."""

from __future__ import annotations

import re
from pathlib import Path

from publishing_helpers import REPO, SHARD, RecordingApi, listing

from tips_hf.hub import main, publish


def test_real_push_records_hub_calls(verified_model, dry_run):
    api = RecordingApi()
    result = publish(
        verified_model,
        REPO,
        private=True,
        token="hf_test",
        commit_message="Add tiny TIPS",
        max_shard_size=SHARD,
        api=api,
    )
    assert [name for name, _, _ in api.calls] == ["create_repo", "upload_folder"]
    _, args, kwargs = api.calls[0]
    assert args == (REPO,)
    assert kwargs == dict(token="hf_test", private=True, exist_ok=True, repo_type="model")
    _, args, kwargs = api.calls[1]
    assert kwargs["repo_id"] == REPO and kwargs["commit_message"] == "Add tiny TIPS"
    assert kwargs["repo_type"] == "model" and kwargs["token"] == "hf_test" and kwargs["revision"] is None
    # The upload is the dry-run folder, file for file, and the staging folder is gone afterwards.
    assert api.uploaded == listing(dry_run[0]) == result.files
    assert not Path(kwargs["folder_path"]).exists()
    assert not result.dry_run and result.commit.commit_url.endswith("/commit/0123abc")
    assert result.url == f"https://huggingface.co/{REPO}"


def test_real_push_to_branch_with_default_message(verified_model):
    api = RecordingApi(token="hf_from_api")
    publish(verified_model, REPO, revision="v1-weights", api=api)
    assert [name for name, _, _ in api.calls] == ["create_repo", "create_branch", "upload_folder"]
    assert api.calls[0][2]["private"] is False and api.calls[0][2]["token"] == "hf_from_api"
    assert api.calls[1][1] == (REPO,) and api.calls[1][2]["branch"] == "v1-weights"
    upload = api.calls[2][2]
    assert upload["revision"] == "v1-weights"
    assert re.fullmatch(
        r"Upload TIPS \(custom: width 96, 2 vision layers, patch 14\) with tips-hf \S+", upload["commit_message"]
    )


def test_cli_real_push(verified_model, monkeypatch, capsys):
    api = RecordingApi()
    monkeypatch.setattr("tips_hf.hub.publishing.HfApi", lambda: api)
    code = main(
        ["--model", str(verified_model), "--repo-id", REPO, "--private", "--token", "hf_cli"]
        + ["--commit-message", "from the CLI"]
    )
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"uploaded to https://huggingface.co/{REPO} (https://huggingface.co/{REPO}/commit/0123abc)" in printed.out
    assert api.calls[0][2]["private"] is True and api.calls[1][2]["commit_message"] == "from the CLI"
    assert f"{len(api.uploaded)} files" in printed.out


def test_cli_upload_failure_is_reported(verified_model, monkeypatch, capsys):
    from huggingface_hub.errors import OfflineModeIsEnabled

    class OfflineApi(RecordingApi):
        def create_repo(self, *args, **kwargs):
            raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    api = OfflineApi()
    monkeypatch.setattr("tips_hf.hub.publishing.HfApi", lambda: api)
    code = main(["--model", str(verified_model), "--repo-id", REPO, "--token", "hf_cli"])
    printed = capsys.readouterr()
    assert code == 1 and "Traceback" not in printed.err
    assert "tips-publish: error: could not reach the Hub: Cannot reach https://huggingface.co" in printed.err
    assert api.calls == [] and printed.out == ""
