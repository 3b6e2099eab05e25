"""`tips-publish`: the command line over [`publish`]."""

from __future__ import annotations

import argparse
import logging
import sys

from huggingface_hub.errors import HfHubHTTPError

from ..conversion.writer import DEFAULT_MAX_SHARD_SIZE
from .card import PublishError
from .publishing import publish

logger = logging.getLogger("tips_hf.hub")

# ---------------------------------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tips-publish",
        description="Publish a TIPS model folder to the Hugging Face Hub, with remote code and a model card "
        "(--dry-run --output OUT: write the exact folder instead, send nothing).",
    )
    parser.add_argument("--model", required=True, help="TIPS model folder (from tips-convert or save_pretrained)")
    parser.add_argument("--repo-id", required=True, help="target Hub repository, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--token", help="Hub token (prefer HF_TOKEN or `hf auth login`: a flag ends up in the shell history)"
    )
    parser.add_argument("--revision", help="branch to commit to (created if missing; default: main)")
    parser.add_argument("--commit-message", help="commit message of the upload")
    parser.add_argument(
        "--max-shard-size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help=f"safetensors shard size (default {DEFAULT_MAX_SHARD_SIZE})",
    )
    parser.add_argument(
        "--base-model", help="card base_model (default: the Google release of the config's preset; '' for none)"
    )
    parser.add_argument("--dry-run", action="store_true", help="build the folder and list it; send nothing")
    parser.add_argument("--output", help="with --dry-run: write the folder here (atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    return parser


def _print_files(files: list[tuple[str, int]]) -> None:
    width = max((len(name) for name, _ in files), default=4)
    for name, size in files:
        print(f"  {name:<{width}}  {size:>14,} bytes")
    print(f"  {len(files)} files, {sum(size for _, size in files):,} bytes")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Warnings are logged while the folder is built, i.e. before a (long) upload starts.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tips-publish: warning: %(message)s"))
    logger.addHandler(handler)
    try:
        return _run(args)
    finally:
        logger.removeHandler(handler)


def _run(args: argparse.Namespace) -> int:
    if args.output and not args.dry_run:
        print("tips-publish: error: --output is only used with --dry-run.", file=sys.stderr)
        return 2
    try:
        result = publish(
            args.model,
            args.repo_id,
            private=args.private,
            token=args.token,
            dry_run=args.dry_run,
            output_dir=args.output,
            overwrite=args.overwrite,
            max_shard_size=args.max_shard_size,
            commit_message=args.commit_message,
            revision=args.revision,
            base_model=args.base_model,
        )
    except (PublishError, FileExistsError, FileNotFoundError) as error:
        print(f"tips-publish: error: {error}", file=sys.stderr)
        return 2
    except HfHubHTTPError as error:
        print(f"tips-publish: error: the Hub refused the upload: {error}", file=sys.stderr)
        return 1
    except ConnectionError as error:  # includes huggingface_hub's OfflineModeIsEnabled (HF_HUB_OFFLINE=1)
        print(f"tips-publish: error: could not reach the Hub: {error}", file=sys.stderr)
        return 1
    if result.dry_run:
        where = f"written to {result.output_dir}" if result.output_dir else "built (use --output DIR to keep it)"
        print(f"dry run, nothing sent: folder for {result.repo_id} {where}:")
    else:
        print(
            f"uploaded to {result.url}"
            + (f" ({result.commit.commit_url})" if hasattr(result.commit, "commit_url") else "")
        )
    _print_files(result.files)
    if result.not_included:
        print(f"not included from {args.model}: {', '.join(result.not_included)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
