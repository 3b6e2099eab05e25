"""`publish`: rebuild a TIPS model folder for the Hub (weights, remote code, processor, parity, card) and upload it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, get_token, split_torch_state_dict_into_shards
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .. import __version__
from ..conversion.verify import PARITY_FILE
from ..conversion.writer import DEFAULT_MAX_SHARD_SIZE
from ..modeling.configuration_tips import PRESETS, TipsConfig
from .card import GOOGLE_HUB_IDS, PublishError, _load_parity, build_model_card, variant_name

logger = logging.getLogger("tips_hf.hub")

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
# Remote files a push replaces as a whole: the model's weights in any shard count (transformers' file names) and their
# indexes. `upload_folder` deletes those the new folder does not hold (a re-publish with another shard count leaves no
# stale shard or index behind) and never deletes what it uploads; other files of the repository stay.
STALE_PATTERNS = [f"{stem}{form}" for stem, suffix in (("model", ".safetensors"), ("pytorch_model", ".bin"))
                  for form in (suffix, f"-*-of-*{suffix}", f"{suffix}.index.json")]
# Processor files the re-save may write under another name (e.g. preprocessor_config.json -> processor_config.json).
_PROCESSOR_FILES = {
    "processor_config.json",
    "preprocessor_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.json",
}

@dataclass
class PublishResult:
    """What [`publish`] built and, unless `dry_run`, sent.

    Attributes:
        repo_id (`str`): target repository.
        files (`list[tuple[str, int]]`): every file of the uploaded (or dry-run) folder: relative path, size in bytes.
        card (`ModelCard`): the generated model card (the folder's `README.md`).
        dry_run (`bool`): nothing was sent.
        output_dir (`Path`, *optional*): where the dry-run folder was written.
        commit (*optional*): what `HfApi.upload_folder` returned (a `CommitInfo` with the commit URL).
        not_included (`list[str]`): files of the source folder that the published folder does not carry.
        warnings (`list[str]`): things worth a look before (or after) publishing.
    """

    repo_id: str
    files: list[tuple[str, int]]
    card: ModelCard
    dry_run: bool
    output_dir: Path | None = None
    commit: Any = None
    not_included: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}"



# ---------------------------------------------------------------------------------------------------------------------
# Publishing


def check_repo_id(repo_id: str, what: str = "repo id") -> str:
    """Raise [`PublishError`] unless `repo_id` has the form `ORG/NAME` with Hub-valid characters."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"invalid {what} {repo_id!r}: expected the form ORG/NAME (e.g. my-org/tips-v2-b14).")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise PublishError(f"invalid {what} {repo_id!r}: {error}") from None
    return repo_id


def _describe(folder: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "the folder is empty"
    return "found: " + ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def check_model_dir(model_dir: str | os.PathLike) -> Path:
    """Raise [`PublishError`] unless `model_dir` is a TIPS model folder (config.json of model_type "tips" + weights)."""
    folder = Path(model_dir)
    if not folder.exists():
        raise PublishError(f"model folder {folder} does not exist.")
    if not folder.is_dir():
        raise PublishError(f"{folder} is a file, not a model folder.")
    config_path = folder / "config.json"
    if not config_path.is_file():
        hint = ""
        if any(p.suffix == ".npz" for p in folder.iterdir()):
            hint = " It holds .npz files: convert them first with `tips-convert official ... --output DIR`."
        raise PublishError(f"{folder} is not a TIPS model folder: no config.json ({_describe(folder)}).{hint}")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise PublishError(f"{config_path} is not valid JSON ({error}).") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != TipsConfig.model_type:
        architectures = config.get("architectures") if isinstance(config, dict) else None
        raise PublishError(
            f"{folder} is not a TIPS model folder: config.json has model_type {model_type!r} "
            f"(architectures {architectures!r}), expected 'tips'. Convert it with `tips-convert` first."
        )
    if not any(p.name.endswith(_WEIGHT_SUFFIXES) for p in folder.iterdir()):
        raise PublishError(f"{folder} has a TIPS config.json but no weights ({_describe(folder)}).")
    return folder


def _load_processor(folder: Path):
    """The folder's processor (image processor + tokenizer), or whichever half it has, or `None`."""
    from ..processing.image_processing_tips import TipsImageProcessor
    from ..processing.processing_tips import TipsProcessor
    from ..processing.tokenization_tips import TipsTokenizer

    has_tokenizer = (folder / "tokenizer.model").is_file()
    has_images = (folder / "processor_config.json").is_file() or (folder / "preprocessor_config.json").is_file()
    try:
        if has_tokenizer and has_images:
            return TipsProcessor.from_pretrained(folder)
        if has_images:
            return TipsImageProcessor.from_pretrained(folder)
        if has_tokenizer:
            return TipsTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise PublishError(f"could not load the processor files of {folder}: {error}") from None
    return None


def _list_files(folder: Path) -> list[tuple[str, int]]:
    return sorted((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*") if p.is_file())


def _build_folder(
    model_dir: Path,
    staging: Path,
    repo_id: str,
    max_shard_size: int | str,
    base_model: str | None,
) -> tuple[TipsConfig, ModelCard, list[str], list[str]]:
    """Write the folder to upload into `staging`; return its config, card, the source files left out, and warnings."""
    from ..conversion.layouts import LayoutError
    from ..conversion.writer import meta_model, open_checkpoint, write_model_folder

    warnings: list[str] = []
    processor = _load_processor(model_dir)
    try:
        config, keys, read = open_checkpoint(model_dir)
    except (OSError, ValueError) as error:
        raise PublishError(f"could not read the model in {model_dir}: {error}") from None
    # Streamed tensor by tensor (memory near one shard); a partial or mismatched checkpoint is refused, never
    # published with random weights.
    model = meta_model(config)
    expected = model.state_dict()
    problems = {"missing_keys": sorted(set(expected) - set(keys)), "unexpected_keys": sorted(set(keys) - set(expected))}
    if any(problems.values()):
        details = "; ".join(f"{k}: {v[:5]}" for k, v in problems.items() if v)
        raise PublishError(f"the weights in {model_dir} do not match its config.json ({details}).")
    try:
        write_model_folder(
            staging,
            config,
            ((key, read(key)) for key in expected),
            processor,
            max_shard_size,
            overwrite=True,
            description="tips-publish",
            source=str(model_dir),
        )
    except LayoutError as error:
        raise PublishError(f"the weights in {model_dir} do not match its config.json ({error}).") from None
    # the card reads the temperatures: a meta-device model carrying only those
    model.load_state_dict({"log_temperature": read("log_temperature")}, strict=False, assign=True)
    if processor is None:
        warnings.append(
            f"{model_dir} has no processor files (tokenizer.model, processor_config.json): the repository will not "
            "work with AutoProcessor or pipeline(); convert with --tokenizer to ship them."
        )
    elif not (staging / "tokenizer.model").is_file():
        warnings.append(f"{model_dir} has no tokenizer.model: the repository can embed images but not text.")
    parity = None
    if (model_dir / PARITY_FILE).is_file():
        parity = _load_parity(model_dir / PARITY_FILE)
        shutil.copyfile(model_dir / PARITY_FILE, staging / PARITY_FILE)
    if base_model is None and config.preset and config.preset not in GOOGLE_HUB_IDS:
        warnings.append(f"preset {config.preset!r} has no known Google release; pass --base-model to set one.")
    if config.preset in PRESETS:
        # A preset claims an architecture (and the base_model derived from it): check that the weights agree.
        reference = TipsConfig.from_preset(config.preset)
        for tower in ("vision_config", "text_config"):
            for key in ("hidden_size", "num_hidden_layers", "intermediate_size"):
                want, got = getattr(getattr(reference, tower), key), getattr(getattr(config, tower), key)
                if want != got:
                    warnings.append(
                        f"config.preset is {config.preset!r} but {tower}.{key} is {got} (the preset has {want}); "
                        "check the card's base_model."
                    )
    for warning in warnings:
        logger.warning(warning)  # now, not with the result: a real upload may take a while
    card = build_model_card(model, parity=parity, base_model=base_model, repo_id=repo_id)
    card.save(staging / "README.md")
    written = {name for name, _ in _list_files(staging)}
    not_included = sorted(
        p.name
        for p in model_dir.iterdir()
        if p.is_file()
        and p.name not in written
        and not p.name.endswith(_WEIGHT_SUFFIXES)
        and not p.name.endswith(".index.json")
        and p.name not in _PROCESSOR_FILES
    )
    return config, card, not_included, warnings


def _resolve_token(token: str | None, api) -> str | None:
    return token or getattr(api, "token", None) or get_token()


def publish(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    commit_message: str | None = None,
    revision: str | None = None,
    base_model: str | None = None,
    api: HfApi | None = None,
) -> PublishResult:
    r"""Build the Hub folder of a TIPS model and upload it (or, with `dry_run`, only build it).

    The folder holds the re-saved weights (safetensors, sharded above `max_shard_size`), `config.json` with `auto_map`
    and the remote-code module files, the re-saved processor, the conversion's `parity.json` (if any) and a generated
    `README.md` (see [`build_model_card`]).

    Args:
        model_dir (`str` or `os.PathLike`): a TIPS model folder (written by `tips-convert` or `save_pretrained`).
        repo_id (`str`): target repository, `ORG/NAME`.
        private (`bool`, defaults to `False`): create the repository private (no effect on an existing one).
        token (`str`, *optional*): Hub token; defaults to the `api`'s, then `HF_TOKEN`, then the stored login.
        dry_run (`bool`, defaults to `False`): build the folder, send nothing.
        output_dir (`str` or `os.PathLike`, *optional*): with `dry_run`, where to write the folder (atomically).
        overwrite (`bool`, defaults to `False`): replace a non-empty `output_dir`.
        max_shard_size (`int` or `str`, defaults to `"2GB"`): largest safetensors shard.
        commit_message (`str`, *optional*): commit message of the upload.
        revision (`str`, *optional*): branch to commit to (created if missing); defaults to the main branch.
        base_model (`str`, *optional*): the card's `base_model`; defaults to the Google release of the config's
            preset, `""` for none.
        api (`HfApi`, *optional*): the client used for the upload (tests pass a recording fake).

    Returns:
        [`PublishResult`]: the file listing, the card and, after an upload, the commit.
    """
    check_repo_id(repo_id)
    if base_model:
        check_repo_id(base_model, "base model")
    model_dir = check_model_dir(model_dir)
    try:
        split_torch_state_dict_into_shards({}, max_shard_size=max_shard_size)  # parses the size, nothing else
    except ValueError as error:
        raise PublishError(f"invalid max shard size {max_shard_size!r}: {error}") from None
    if output_dir is not None and not dry_run:
        raise PublishError("an output folder is only written with a dry run (dry_run=True / --dry-run).")
    if output_dir is not None:
        output_dir = Path(output_dir)
        if output_dir.exists() and not output_dir.is_dir():
            raise PublishError(f"output {output_dir} exists and is a file.")
        if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
            raise FileExistsError(f"{output_dir} exists and is not empty; pass --overwrite to replace it.")
        if output_dir.resolve() == model_dir.resolve():
            raise PublishError("the output folder must differ from the model folder.")

    if dry_run:
        if output_dir is None:
            with tempfile.TemporaryDirectory(prefix="tips-publish-") as tmp:
                config, card, not_included, warnings = _build_folder(
                    model_dir, Path(tmp), repo_id, max_shard_size, base_model
                )
                files = _list_files(Path(tmp))
            return PublishResult(repo_id, files, card, True, None, None, not_included, warnings)
        from ..conversion.writer import atomic_folder

        with atomic_folder(output_dir, overwrite) as staging:
            config, card, not_included, warnings = _build_folder(
                model_dir, staging, repo_id, max_shard_size, base_model
            )
            files = _list_files(staging)
        return PublishResult(repo_id, files, card, True, output_dir, None, not_included, warnings)

    api = api if api is not None else HfApi()
    token = _resolve_token(token, api)
    if not token:
        raise PublishError(
            "no Hugging Face token for the upload: pass --token, set HF_TOKEN=hf_... in the environment, or run "
            "`hf auth login` (use --dry-run --output DIR to build the folder without uploading)."
        )
    with tempfile.TemporaryDirectory(prefix="tips-publish-") as tmp:
        staging = Path(tmp)
        # Build before touching the Hub, so that a bad folder never leaves an empty repository behind.
        config, card, not_included, warnings = _build_folder(model_dir, staging, repo_id, max_shard_size, base_model)
        files = _list_files(staging)
        message = commit_message or f"Upload {variant_name(config)} with tips-hf {__version__}"
        api.create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo_id, branch=revision, token=token, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(staging),
            commit_message=message,
            token=token,
            repo_type="model",
            revision=revision,
            delete_patterns=STALE_PATTERNS,
        )
    return PublishResult(repo_id, files, card, False, None, commit, not_included, warnings)


