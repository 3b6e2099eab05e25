"""Helpers shared by the `tips-publish` tests (test_publishing_folder/_card/_upload.py); their fixtures
`verified_model` and `dry_run` live in conftest.py.

Nothing here touches the network: uploads go to `RecordingApi`, a recording fake of `HfApi`.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from tips_hf.hub import main

NAME = "v1-swiglu-448"
REPO = "my-org/tips-tiny"
SHARD = "500KB"  # the tiny model is ~2.8 MB: several shards


def listing(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def table_rows(markdown: str, header: str) -> list[list[str]]:
    """Cells of the rows of the markdown table that starts with `header`."""
    lines = markdown[markdown.index(header) :].splitlines()
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def architecture(markdown: str) -> dict[str, list[str]]:
    return {name: cells for name, *cells in table_rows(markdown, "| | Vision | Text |")}


def parity_rows(markdown: str) -> set[tuple[str, str, str]]:
    """(output key, input, max|Δ|) of the card's parity table, e.g. ("cls1", "448x448", "7.451e-09")."""
    rows = set()
    for label, size, value in table_rows(markdown, "| Output | Input |"):
        key = re.search(r"\(`(\w+)`\)$", label).group(1) if "`" in label else label
        rows.add((key, size.replace("×", "x"), value))
    return rows


class RecordingApi:
    """Stands in for `HfApi`: records every call, and the folder's listing at upload time (it is deleted after)."""

    def __init__(self, token: str | None = None):
        self.token = token
        self.calls: list[tuple[str, tuple, dict]] = []
        self.uploaded: list[tuple[str, int]] = []

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))
        return SimpleNamespace(repo_id=args[0] if args else kwargs["repo_id"])

    def create_branch(self, *args, **kwargs):
        self.calls.append(("create_branch", args, kwargs))

    def upload_folder(self, *args, **kwargs):
        self.calls.append(("upload_folder", args, kwargs))
        self.uploaded = listing(Path(kwargs["folder_path"]))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/0123abc")


def cli_error(capsys, *argv: str) -> str:
    code = main(list(argv))
    printed = capsys.readouterr()
    assert code == 2, printed
    assert "Traceback" not in printed.err and printed.out == ""
    # stderr may also hold transformers' progress bars; the error is one line of our own.
    assert printed.err.count("tips-publish: error: ") == 1, printed.err
    return printed.err.split("tips-publish: error: ")[1]
