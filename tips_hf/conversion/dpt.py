"""Import of a vision tower alone (`TipsVisionModel` folder) and of the released DPT decoders (`TipsFor*` folders).

The released decoders (`tips_v2_{b14,l14,so400m14,g14}_{task}_dpt.zip`) are Scenic/Flax npz archives: `/`-separated
keys, optionally prefixed `decoder/`; conv kernels (kh, kw, Cin, Cout); the two ConvTranspose kernels spatially flipped
relative to PyTorch; dense kernels (in, out). Channels, class count and depth bins are read from the arrays.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch
from transformers.dynamic_module_utils import custom_object_save

from ..modeling.configuration_dense_tips import DPT_TASKS, TipsDPTConfig, official_dpt_layers
from ..modeling.configuration_tips import PRESETS, TipsVisionConfig
from ..modeling.modeling_tips import meta_model, state_shapes
from .layouts import OFFICIAL, LayoutError, arch_from_config, context_from_config, import_tensors, infer_official_config
from .npz import NpzReader
from .official import ConversionResult
from .writer import DEFAULT_MAX_SHARD_SIZE, atomic_folder, expected_shapes, write_safetensors

# ADE20K (SceneParse150) class names in label order, as the official notebooks list them.
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet", "sidewalk",
    "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water", "painting", "sofa",
    "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp",
    "bathtub", "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter", "sand",
    "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs", "runway", "case", "pool table",
    "pillow", "screen door", "stairway", "river", "bridge", "bookcase", "blind", "coffee table", "toilet", "flower",
    "book", "hill", "bench", "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat",
    "bar", "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight",
    "booth", "television receiver", "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator",
    "ottoman", "bottle", "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
    "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
    "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier",
    "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)
# Task -> accepted names of the per-pixel head in the released files (first: the current name).
HEAD_NAMES = {
    "segmentation": ("pixel_segmentation", "segmentation_head"),
    "depth": ("pixel_depth_classif", "pixel_depth_regress"),
    "normals": ("pixel_normals",),
}
# Task -> (our model class, the Auto class that loads it; normals: AutoModel only).
DPT_MODEL_CLASSES = {
    "segmentation": ("TipsForSemanticSegmentation", "AutoModelForSemanticSegmentation"),
    "depth": ("TipsForDepthEstimation", "AutoModelForDepthEstimation"),
    "normals": ("TipsForNormalEstimation", None),
}


# ---------------------------------------------------------------------------------------------------------------------
# Flax -> PyTorch tensors


def _conv(t: torch.Tensor) -> torch.Tensor:  # (kh, kw, in, out) -> (out, in, kh, kw)
    return t.permute(3, 2, 0, 1).contiguous()


def _conv_transpose(t: torch.Tensor) -> torch.Tensor:  # flipped (kh, kw, in, out) -> (in, out, kh, kw)
    return t.flip(0, 1).permute(2, 3, 0, 1).contiguous()


def _dense(t: torch.Tensor) -> torch.Tensor:  # (in, out) -> (out, in)
    return t.t().contiguous()


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def decoder_key_table(head: str) -> list[tuple[str, str, Callable[[torch.Tensor], torch.Tensor], int]]:
    """(our key, flax key without prefix, transform, ndim of the flax array) for every tensor of a DPT decoder whose
    per-pixel head is called `head` in the file."""
    rows = []

    def add(ours: str, theirs: str, kind: Callable, bias: bool = True) -> None:
        rows.append((f"{ours}.weight", f"{theirs}/kernel", kind, 2 if kind is _dense else 4))
        if bias:
            rows.append((f"{ours}.bias", f"{theirs}/bias", _same, 1))

    reassemble = "dpt/reassemble_blocks"
    for i in range(4):
        add(f"decoder.reassemble.readout_projects.{i}", f"{reassemble}/readout_projects_{i}", _dense)
        add(f"decoder.reassemble.out_projections.{i}", f"{reassemble}/out_projection_{i}", _conv)
        add(f"decoder.convs.{i}", f"dpt/convs_{i}", _conv, bias=False)
    add("decoder.reassemble.resize_layers.0", f"{reassemble}/resize_layers_0", _conv_transpose)
    add("decoder.reassemble.resize_layers.1", f"{reassemble}/resize_layers_1", _conv_transpose)
    add("decoder.reassemble.resize_layers.3", f"{reassemble}/resize_layers_3", _conv)
    for i in range(4):
        block = f"dpt/fusion_blocks_{i}"
        # Flax names sub-modules in call order: the skip input's unit (blocks 1-3) is called before the main one.
        units = [("main_unit", "PreActResidualConvUnit_0")] if i == 0 else [
            ("skip_unit", "PreActResidualConvUnit_0"),
            ("main_unit", "PreActResidualConvUnit_1"),
        ]
        for ours, theirs in units:
            for conv in ("conv1", "conv2"):
                add(f"decoder.fusion_blocks.{i}.{ours}.{conv}", f"{block}/{theirs}/{conv}", _conv, bias=False)
        add(f"decoder.fusion_blocks.{i}.out_conv", f"{block}/Conv_0", _conv)
    add("decoder.project", "dpt/project", _conv)
    add("head", head, _dense)
    return rows


class DecoderFile:
    """A released DPT decoder archive: key prefix, task head, and the sizes read from its arrays."""

    def __init__(self, reader: NpzReader, task: str):
        if task not in DPT_TASKS:
            raise LayoutError(f"task must be one of {DPT_TASKS}, got {task!r}.")
        self.reader, self.task, self.path = reader, task, reader.path
        keys = reader.keys()
        self.prefix = "decoder/" if any(k.startswith("decoder/") for k in keys) else ""
        if self.prefix and any(not k.startswith(self.prefix) for k in keys):
            odd = sorted(k for k in keys if not k.startswith(self.prefix))[:3]
            raise LayoutError(f"{self.path}: some keys have the 'decoder/' prefix and some not (e.g. {odd}).")
        heads = {name for names in HEAD_NAMES.values() for name in names}
        found = sorted({k[len(self.prefix) :].split("/")[0] for k in keys} & heads)
        wanted = [name for name in HEAD_NAMES[task] if name in found]
        if not wanted:
            hint = f"; it holds the head {found[0]!r} (another task)" if found else "; no known task head found"
            raise LayoutError(
                f"{self.path}: no {task} head ({' or '.join(HEAD_NAMES[task])}/kernel) in this decoder file{hint}."
            )
        self.head = wanted[0]
        self.table = decoder_key_table(self.head)
        self.hidden_size = self._shape("dpt/reassemble_blocks/out_projection_0/kernel", 4)[2]
        self.post_process_channels = [
            self._shape(f"dpt/reassemble_blocks/out_projection_{i}/kernel", 4)[3] for i in range(4)
        ]
        self.channels = self._shape("dpt/convs_0/kernel", 4)[3]
        self.outputs = self._shape(f"{self.head}/kernel", 2)[1]

    def _shape(self, key: str, ndim: int) -> tuple[int, ...]:
        full = self.prefix + key
        if full not in self.reader:
            raise LayoutError(f"{self.path}: missing key {full!r}; is this a released TIPS DPT decoder file?")
        shape = self.reader.shape(full)
        if len(shape) != ndim:
            raise LayoutError(f"{self.path}: key {full!r} has shape {shape}, expected {ndim} dimensions.")
        return shape

    def tensors(self, expected: dict[str, tuple[int, ...]]) -> Iterator[tuple[str, torch.Tensor]]:
        """(our key, tensor) for every decoder tensor; checks the key set before reading anything."""
        wanted = {self.prefix + theirs for _, theirs, _, _ in self.table}
        available = set(self.reader.keys())
        missing, extra = sorted(wanted - available), sorted(available - wanted)
        if missing:
            raise LayoutError(
                f"{self.path}: missing key(s) for a DPT {self.task} decoder: {', '.join(missing[:8])}"
                + (f" (+{len(missing) - 8} more)" if len(missing) > 8 else "")
            )
        if extra:
            raise LayoutError(
                f"{self.path}: unexpected key(s) for a DPT {self.task} decoder: {', '.join(extra[:8])}"
                + (f" (+{len(extra) - 8} more)" if len(extra) > 8 else "")
            )
        for ours, theirs, transform, ndim in self.table:
            key = self.prefix + theirs
            array = self.reader.read(key)
            if array.ndim != ndim:
                raise LayoutError(f"{self.path}: key {key!r} has shape {tuple(array.shape)}, expected {ndim} dims.")
            tensor = transform(array.float())
            if tuple(tensor.shape) != tuple(expected[ours]):
                raise LayoutError(
                    f"{self.path}: key {key!r} has shape {tuple(array.shape)}, which does not fit the decoder read "
                    f"from the other arrays ({ours} must be {tuple(expected[ours])})."
                )
            yield ours, tensor


# ---------------------------------------------------------------------------------------------------------------------
# Writers


def _vision_config(vision: NpzReader, preset: str | None, vision_heads: int | None, image_resolution: int | None):
    """The vision tower's config from its arrays, and the processor resolution (the preset's, else 448)."""
    tips = infer_official_config(vision, None, preset, vision_heads, None, image_resolution)
    return tips, tips.vision_config, image_resolution or (PRESETS[preset].resolution if preset else tips.image_resolution)


def _vision_tensors(vision: NpzReader, tips_config, strip_prefix: bool) -> Iterator[tuple[str, torch.Tensor]]:
    shapes = expected_shapes(tips_config)
    for key, tensor in import_tensors(
        OFFICIAL, arch_from_config(tips_config), context_from_config(tips_config), vision.keys(), vision.read, shapes,
        str(vision.path), ("vision",),
    ):
        yield (key[len("vision_model.") :] if strip_prefix else key), tensor


def _write_folder(
    output_dir, model_class, config, tensors: Iterable[tuple[str, torch.Tensor]], auto_map: dict[str, str],
    resolution: int, max_shard_size, overwrite: bool, progress: bool, description: str, source: str,
) -> Path:
    """Weights, config with `auto_map`, remote-code files and an image processor, written atomically."""
    from ..processing.image_processing_tips import TipsImageProcessor

    model = meta_model(config, model_class)
    with atomic_folder(output_dir, overwrite) as staging:
        write_safetensors(
            staging, model.state_dict(), tensors, max_shard_size, progress=progress, description=description,
            source=source,
        )
        config.architectures = [model_class.__name__]
        config.auto_map = auto_map
        config.save_pretrained(staging)
        custom_object_save(model, staging)
        TipsImageProcessor(size={"height": resolution, "width": resolution}).save_pretrained(staging)
    return Path(output_dir)


def convert_official_vision(
    vision_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    preset: str | None = None,
    vision_heads: int | None = None,
    image_resolution: int | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert an official PyTorch vision tower (`*_vision.npz`) alone into a `TipsVisionModel` folder (what the DPT
    and segmentation notebooks load); `TipsVisionModel.from_pretrained` and `AutoModel` read it."""
    from ..modeling.modeling_tips import TipsVisionModel

    with NpzReader(vision_path) as vision:
        tips, config, resolution = _vision_config(vision, preset, vision_heads, image_resolution)
        out = _write_folder(
            output_dir, TipsVisionModel, config, _vision_tensors(vision, tips, strip_prefix=True),
            {"AutoConfig": "configuration_tips.TipsVisionConfig", "AutoModel": "modeling_tips.TipsVisionModel"},
            resolution, max_shard_size, overwrite, progress, "tips-convert official (vision)", str(vision.path),
        )
    return ConversionResult(out, config)


def convert_dpt(
    vision_path: str | os.PathLike,
    decoder_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    task: str,
    layers: list[int] | None = None,
    preset: str | None = None,
    vision_heads: int | None = None,
    min_depth: float | None = None,
    max_depth: float | None = None,
    image_resolution: int | None = None,
    verify: str | os.PathLike | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Convert an official vision tower and a released DPT decoder into a `TipsFor{SemanticSegmentation,
    DepthEstimation,NormalEstimation}` folder.

    `layers` (the four 0-based blocks the decoder reads) defaults to the official per-size choice
    ([`official_dpt_layers`]: B [2,5,8,11], L [5,11,17,23], So400m [6,13,20,26], g [9,19,29,39]). A 150-class head
    gets ADE20K's class names as `id2label`. With `verify`, the written model is re-run on the inputs stored in that
    dense expected-outputs `.npz` and the max abs differences are returned and saved as `parity.json`.
    """
    from ..modeling import modeling_dense_tips

    if task not in DPT_TASKS:
        raise LayoutError(f"--task must be one of {DPT_TASKS}, got {task!r}.")
    with NpzReader(vision_path) as vision, NpzReader(decoder_path) as decoder_reader:
        tips, vision_config, resolution = _vision_config(vision, preset, vision_heads, image_resolution)
        decoder = DecoderFile(decoder_reader, task)
        if decoder.hidden_size != vision_config.hidden_size:
            raise LayoutError(
                f"{decoder.path} reads features of width {decoder.hidden_size} but the vision tower {vision.path} has "
                f"width {vision_config.hidden_size}; the decoder belongs to another model size."
            )
        config = _dpt_config(vision_config, decoder, task, layers, min_depth, max_depth, resolution)
        class_name, auto_class = DPT_MODEL_CLASSES[task]
        model_class = getattr(modeling_dense_tips, class_name)
        auto_map = {"AutoConfig": "configuration_dense_tips.TipsDPTConfig", "AutoModel": f"modeling_dense_tips.{class_name}"}
        if auto_class:
            auto_map[auto_class] = f"modeling_dense_tips.{class_name}"
        shapes = state_shapes(config, model_class)

        def stream():
            yield from _vision_tensors(vision, tips, strip_prefix=False)
            yield from decoder.tensors(shapes)

        out = _write_folder(
            output_dir, model_class, config, stream(), auto_map, resolution, max_shard_size, overwrite, progress,
            f"tips-convert dpt ({task})", f"{vision.path} + {decoder.path}",
        )
    result = ConversionResult(out, config)
    if verify is not None:
        from .verify import record_parity

        result.parity = verify_dpt(out, verify)
        record_parity(out, result.parity, source="official PyTorch DPT decoder", expected=verify)
    return result


def _dpt_config(vision_config: TipsVisionConfig, decoder: DecoderFile, task: str, layers, min_depth, max_depth,
                resolution: int) -> TipsDPTConfig:
    depth = vision_config.num_hidden_layers
    layers = list(layers) if layers is not None else official_dpt_layers(depth)
    if len(layers) != 4 or any(not 0 <= int(i) < depth for i in layers):
        raise LayoutError(f"--layers must be 4 block indices in [0, {depth}), got {layers}.")
    if task != "depth" and (min_depth is not None or max_depth is not None):
        raise LayoutError(f"--min-depth/--max-depth apply to --task depth only, not {task}.")
    kwargs: dict = dict(
        vision_config=vision_config.to_dict(),
        task=task,
        backbone_out_indices=[int(i) for i in layers],
        dpt_channels=decoder.channels,
        post_process_channels=decoder.post_process_channels,
        image_resolution=resolution,
    )
    if task == "segmentation":
        names = ADE20K_CLASSES if decoder.outputs == len(ADE20K_CLASSES) else [f"class_{i}" for i in range(decoder.outputs)]
        kwargs["id2label"] = dict(enumerate(names))
        kwargs["label2id"] = {name: i for i, name in enumerate(names)}
    elif task == "depth":
        kwargs["num_depth_bins"] = decoder.outputs
        kwargs["min_depth"] = 0.001 if min_depth is None else float(min_depth)
        kwargs["max_depth"] = 10.0 if max_depth is None else float(max_depth)
    elif decoder.outputs != 3:
        raise LayoutError(f"{decoder.path}: a normals head has 3 outputs, this one has {decoder.outputs}.")
    try:
        return TipsDPTConfig(**kwargs)
    except ValueError as error:
        raise LayoutError(str(error)) from None


@torch.no_grad()
def verify_dpt(model, expected_path: str | os.PathLike) -> dict[str, float]:
    """Max abs difference of the intermediate layers and the task output (upsampled to the input, as the official
    decoder does) against a dense expected-outputs `.npz` (`pixel_values_u8_{H}x{W}`, `intermediate_*`, `dpt_*`)."""
    import torch.nn.functional as F

    from ..modeling import modeling_dense_tips
    from .verify import _max_diff

    if isinstance(model, (str, os.PathLike)):
        task = TipsDPTConfig.from_pretrained(model).task
        model = getattr(modeling_dense_tips, DPT_MODEL_CLASSES[task][0]).from_pretrained(model)
    model = model.eval().float()
    task = model.config.task
    report: dict[str, float] = {}
    with NpzReader(expected_path) as expected:
        sizes = sorted(m.group(1) for k in expected.keys() if (m := re.fullmatch(r"pixel_values_u8_(\d+x\d+)", k)))
        if not sizes:
            raise LayoutError(f"{expected_path}: no 'pixel_values_u8_HxW' inputs; not a TIPS dense expected file.")
        for size in sizes:
            pixels = expected.read(f"pixel_values_u8_{size}").float() / 255.0
            layers = model.vision_model.get_intermediate_layers(pixels, model.config.backbone_out_indices)
            for j, (patches, cls) in enumerate(layers):
                if f"intermediate_patch_{j}_{size}" in expected:
                    report[f"intermediate_patch_{j}@{size}"] = _max_diff(
                        patches, expected.read(f"intermediate_patch_{j}_{size}"), size
                    )
                    report[f"intermediate_cls_{j}@{size}"] = _max_diff(
                        cls, expected.read(f"intermediate_cls_{j}_{size}"), size
                    )
            key = f"dpt_{task}_{size}"
            if key in expected:
                out = model(pixel_values=pixels)
                got = {"segmentation": out.logits if task == "segmentation" else None}.get(task)
                if task == "depth":
                    got = out.predicted_depth[:, None]
                elif task == "normals":
                    got = out.predicted_normals
                got = F.interpolate(got, size=tuple(pixels.shape[-2:]), mode="bilinear", align_corners=False)
                report[f"dpt_{task}@{size}"] = _max_diff(got, expected.read(key), size)
    return report


__all__ = [
    "ADE20K_CLASSES",
    "DPT_MODEL_CLASSES",
    "HEAD_NAMES",
    "convert_dpt",
    "convert_official_vision",
    "decoder_key_table",
    "verify_dpt",
]
