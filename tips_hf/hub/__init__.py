# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""Publish TIPS models to the Hugging Face Hub: `tips-publish` and [`publish`].

tips-publish --model DIR --repo-id ORG/NAME [--private] [--token TOKEN] [--revision BRANCH] [--commit-message MSG]
             [--max-shard-size 2GB] [--base-model ORG/NAME] [--dry-run [--output OUT [--overwrite]]]

The folder that is uploaded is rebuilt from the model, never copied blindly: the weights are re-saved as (sharded)
safetensors with the remote-code module files and `auto_map` (so the repository loads with `trust_remote_code=True`
without tips-hf installed), the processor is re-saved, the conversion's `parity.json` is carried over and a model card
(`README.md`) is generated from the configuration and the parity report. `--dry-run --output OUT` writes exactly that
folder to OUT and sends nothing.
"""


from .card import (
    CARD_TAGS,
    GOOGLE_HUB_IDS,
    PublishError,
    architecture_table,
    base_model_for,
    build_model_card,
    format_param_count,
    parity_section,
    usage_snippet,
    variant_name,
)
from .cli import build_parser, main
from .publishing import PublishResult, check_model_dir, check_repo_id, publish

__all__ = [
    "CARD_TAGS",
    "GOOGLE_HUB_IDS",
    "PublishError",
    "PublishResult",
    "architecture_table",
    "base_model_for",
    "build_model_card",
    "build_parser",
    "check_model_dir",
    "check_repo_id",
    "format_param_count",
    "main",
    "parity_section",
    "publish",
    "usage_snippet",
    "variant_name",
]
