# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""ONNX and `torch.export` programs of the two TIPS towers, with a parity check against eager PyTorch.

ONNX goes through `torch.onnx.export(dynamo=True)`: it traces with `torch.export` (the same graph as the `.pt2`
programs, real dynamic dimensions with ranges instead of TorchScript's traced constants) and translates with
onnxscript's maintained op library. The onnxscript graph optimizer is switched off: it rewrites `Add(x, c)` as `x`
whenever |c| ≤ 1e-8 (its constant matcher's default absolute tolerance), which drops the text pooling's 1e-8
epsilon and turns an all-padding row into NaN; ONNX Runtime optimizes the graph itself when it loads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .graph import (
    DENSE_OUTPUTS,
    TEXT_INPUTS,
    TEXT_OUTPUTS,
    VISION_INPUTS,
    VISION_OUTPUTS,
    ExportableDense,
    ExportableText,
    ExportableVision,
    dense_example_and_shapes,
    text_example_and_shapes,
    vision_example_and_shapes,
)

ONNX_OPSET = 18
EXTERNAL_DATA_BYTES = 1_800_000_000
DIM_NAMES = {
    "vision": ((0, "batch"), (2, "grid_h"), (3, "grid_w")),
    "text": ((0, "batch"), (1, "length")),
    "dense": ((0, "batch"), (2, "half_grid_h"), (3, "half_grid_w")),
}
# File stem of a DPT model's export, by class.
DENSE_KINDS = {
    "TipsForSemanticSegmentation": "segmentation",
    "TipsForDepthEstimation": "depth",
    "TipsForNormalEstimation": "normals",
}
PARITY_TOLERANCE = 1e-4  # the bound; float32 reorderings in ONNX Runtime give ~1e-6 on real widths


@dataclass
class ExportResult:
    """What an export wrote and the largest |Δ| it measured against eager PyTorch per tower."""

    output_dir: Path
    files: list[str]
    parity: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["output_dir"] = str(self.output_dir)
        return record


# ----------------------------------------------------------------------------------------------------------------------
# Inputs used to check parity: two batch sizes, two image sizes (one non-square), texts with padding.


def parity_vision_inputs(config, seed: int = 0) -> list[torch.Tensor]:
    """(1, 3, S, S) at the learned size and (2, 3, H, W) non-square off the learned grid."""
    generator = torch.Generator().manual_seed(seed)
    patch, grid = config.patch_size, config.position_grid_size
    shapes = [(1, grid, grid), (2, max(1, grid // 2 + 1), grid + 2)]
    return [torch.rand(b, config.num_channels, patch * h, patch * w, generator=generator) for b, h, w in shapes]


def parity_dense_inputs(config, seed: int = 0) -> list[torch.Tensor]:
    """As [`parity_vision_inputs`] with even patch grids (what DPT exports accept)."""
    generator = torch.Generator().manual_seed(seed)
    patch, half = config.patch_size, max(1, config.position_grid_size // 2)
    shapes = [(1, 2 * half, 2 * half), (2, 2 * max(2, half // 2), 2 * (half + 1))]
    return [torch.rand(b, config.num_channels, patch * h, patch * w, generator=generator) for b, h, w in shapes]


def parity_text_inputs(config, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(1, L_max) without padding and (3, L) with a padded row and an all-padding row."""
    generator = torch.Generator().manual_seed(seed)
    full = config.max_position_embeddings
    short = max(2, min(7, full - 1))
    cases = []
    for batch, length in ((1, full), (3, short)):
        ids = torch.randint(1, config.vocab_size, (batch, length), generator=generator)
        mask = torch.ones(batch, length, dtype=torch.long)
        if batch > 1:
            mask[0, length // 2 :] = 0
            mask[-1] = 0
        cases.append((ids * mask, mask))
    return cases


def max_abs_difference(actual: Sequence[Any], expected: Sequence[torch.Tensor]) -> float:
    worst = 0.0
    for got, want in zip(actual, expected, strict=True):
        got = torch.as_tensor(got)
        if got.shape != want.shape:
            raise AssertionError(f"exported output has shape {tuple(got.shape)}, eager PyTorch {tuple(want.shape)}")
        difference = float((got.float() - want.float()).abs().max())
        worst = max(worst, difference if difference == difference else float("inf"))  # NaN is a failure, not 0
    return worst


@torch.no_grad()
def eager_outputs(model, kind: str, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The reference: the unmodified eager tower (its own `F.interpolate`)."""
    if kind == "vision":
        out = model.vision_model(pixel_values=inputs[0], return_dict=True)
        return [out.last_hidden_state, out.alt_text_embeds, out.synthetic_embeds]
    if kind == "text":
        return [model.text_model(input_ids=inputs[0], attention_mask=inputs[1], return_dict=True).pooler_output]
    return [model(pixel_values=inputs[0], return_dict=True)[DENSE_OUTPUTS[type(model).__name__]]]


def check_parity(model, runners: dict[str, Callable[..., Sequence[Any]]]) -> dict[str, float]:
    """Max |Δ| between each exported tower (`runners[kind](*inputs)`) and eager PyTorch over the parity inputs."""
    parity = {}
    if is_dense(model):
        cases = {DENSE_KINDS[type(model).__name__]: [(x,) for x in parity_dense_inputs(model.config.vision_config)]}
    else:
        cases = {
            "vision": [(x,) for x in parity_vision_inputs(model.config.vision_config)],
            "text": parity_text_inputs(model.config.text_config),
        }
    for kind, run in runners.items():
        parity[kind] = max(
            max_abs_difference(run(*inputs), eager_outputs(model, kind, inputs)) for inputs in cases[kind]
        )
    return parity


# ----------------------------------------------------------------------------------------------------------------------
# Exporters


def is_dense(model) -> bool:
    """Whether `model` is one of the DPT models (`tips_hf.modeling.modeling_dense_tips`) rather than a TipsModel."""
    return type(model).__name__ in DENSE_KINDS


def tower_io(model) -> dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[int, str], ...]]]:
    """Per exported file stem: input names, output names, names of the dynamic dimensions of the first input."""
    if is_dense(model):
        name = type(model).__name__
        return {DENSE_KINDS[name]: (VISION_INPUTS, (DENSE_OUTPUTS[name],), DIM_NAMES["dense"])}
    return {
        "vision": (VISION_INPUTS, VISION_OUTPUTS, DIM_NAMES["vision"]),
        "text": (TEXT_INPUTS, TEXT_OUTPUTS, DIM_NAMES["text"]),
    }


def _towers(model) -> dict[str, tuple[torch.nn.Module, tuple, dict]]:
    if is_dense(model):
        args, shapes = dense_example_and_shapes(model.config.vision_config)
        return {DENSE_KINDS[type(model).__name__]: (ExportableDense(model).eval(), args, shapes)}
    vision_args, vision_shapes = vision_example_and_shapes(model.config.vision_config)
    text_args, text_shapes = text_example_and_shapes(model.config.text_config)
    return {
        "vision": (ExportableVision(model.vision_model).eval(), vision_args, vision_shapes),
        "text": (ExportableText(model.text_model).eval(), text_args, text_shapes),
    }


def export_programs(model) -> dict[str, torch.export.ExportedProgram]:
    """`torch.export` programs of both towers with dynamic batch, height/width (multiples of the patch) and length,
    or of a DPT model (dynamic batch, height/width multiples of twice the patch)."""
    model = model.float().eval()
    programs = {}
    for kind, (module, args, shapes) in _towers(model).items():
        programs[kind] = torch.export.export(module, args, dynamic_shapes=shapes, strict=False)
    return programs


def export_onnx_files(
    model, folder: str | os.PathLike, programs: dict[str, torch.export.ExportedProgram] | None = None
) -> list[str]:
    """Write `vision_model.onnx` and `text_model.onnx` (opset 18; weights inside the file up to 1.8 GB, else in
    `<name>.onnx.data` beside it) to `folder`, translated from the `torch.export` programs of [`export_programs`]
    (traced here unless given)."""
    programs = programs if programs is not None else export_programs(model)
    folder = Path(folder)
    names = tower_io(model)
    written = []
    for kind, program in programs.items():
        inputs, outputs, dims = names[kind]
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=list(inputs),
            output_names=list(outputs),
            opset_version=ONNX_OPSET,
            optimize=False,
            verbose=False,
        )
        _name_dynamic_dims(onnx_program.model.graph, dims)
        path = folder / f"{kind}_model.onnx"
        # Protobuf caps a file at 2 GiB: larger towers (L/14 and up) keep their weights beside it (`*.onnx.data`).
        external = sum(p.numel() * p.element_size() for p in program.parameters()) > EXTERNAL_DATA_BYTES
        onnx_program.save(str(path), external_data=external)
        written += [path.name] + ([f"{path.name}.data"] if external else [])
    return written


def _name_dynamic_dims(graph, names: Sequence[tuple[int, str]]) -> None:
    """Replace torch.export's symbol names (`s52`) by readable ones (`grid_h`) in every shape of the graph, taking
    the symbols from the first input's dimensions (`names`: (axis, name) pairs; `14*s52` names `s52`)."""
    import re

    import onnx_ir as ir

    mapping = {}
    for axis, name in names:
        dim = graph.inputs[0].shape[axis]
        symbols = re.findall(r"\bs\d+\b", str(dim)) if isinstance(dim, ir.SymbolicDim) else []
        if len(symbols) == 1:
            mapping[symbols[0]] = name
    if not mapping:
        return
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")

    def rename(value) -> None:
        if value is None or value.shape is None:
            return
        dims = [
            ir.SymbolicDim(pattern.sub(lambda m: mapping[m.group(1)], d.value))
            if isinstance(d, ir.SymbolicDim) and d.value
            else d
            for d in value.shape
        ]
        value.shape = ir.Shape(dims)

    for value in list(graph.inputs) + list(graph.outputs):
        rename(value)
    for node in graph:
        for value in node.outputs:
            rename(value)


def onnx_runners(folder: str | os.PathLike, threads: int | None = None) -> dict[str, Callable[..., list]]:
    """ONNX Runtime (CPU) sessions of an exported folder as callables taking torch tensors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    folder = Path(folder)
    sessions = {
        path.name[: -len("_model.onnx")]: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for path in sorted(folder.glob("*_model.onnx"))
    }

    def runner(kind):
        inputs = [i.name for i in sessions[kind].get_inputs()]

        def run(*tensors):
            feed = {name: tensor.numpy() for name, tensor in zip(inputs, tensors, strict=True)}
            return sessions[kind].run(None, feed)

        return run

    return {kind: runner(kind) for kind in sessions}


def program_runners(programs: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    modules = {kind: program.module() for kind, program in programs.items()}

    def runner(kind):
        def run(*tensors):
            with torch.no_grad():
                out = modules[kind](*tensors)
            return out if isinstance(out, (tuple, list)) else [out]

        return run

    return {kind: runner(kind) for kind in modules}


def _parity_line(parity: dict[str, float] | None) -> str:
    if not parity:
        return "Parity was not measured at export (`--no-verify`)."
    return (
        "Measured at export (max |Δ| against eager PyTorch, float32, batch 1 and 2, a square and a non-square size"
        + ("" if len(parity) == 1 else ", texts with padding")
        + "): "
        + ", ".join(f"{k} {v:.1e}" for k, v in parity.items())
        + "."
    )


def _dense_readme(kind: str, model, parity: dict[str, float] | None) -> str:
    stem = DENSE_KINDS[type(model).__name__]
    output = DENSE_OUTPUTS[type(model).__name__]
    patch = model.config.vision_config.patch_size
    suffix = "onnx" if kind == "onnx" else "pt2"
    return f"""# TIPS {type(model).__name__} exported for serving

File: `{stem}_model.{suffix}` ({"ONNX opset 18" if kind == "onnx" else "a `torch.export` program"}), and the
processor files when the source folder had them.

Input `pixel_values` float32 (batch, 3, height, width): RGB in [0, 1], height and width multiples of {2 * patch} and at
least {4 * patch} (an even patch grid: the decoder resizes a skip connection only for odd grids, a branch the graph
does not keep; 448 px as released is fine). Output `{output}` at (16⌈h/2⌉, 16⌈w/2⌉) for an (h, w) patch grid; upsample bilinearly to the
image.

{_parity_line(parity)}
"""


def _export_readme(kind: str, model, parity: dict[str, float] | None) -> str:
    if is_dense(model):
        return _dense_readme(kind, model, parity)
    vision, text = model.config.vision_config, model.config.text_config
    temperature = [round(float(t), 6) for t in model.temperature.detach().cpu()]
    patch = vision.patch_size
    if kind == "onnx":
        files = "`vision_model.onnx`, `text_model.onnx` (ONNX opset 18; a tower over 1.8 GB keeps its weights in `.onnx.data`)"
        usage = (
            '```python\nimport onnxruntime as ort\nfrom tips_hf import TipsProcessor\n\nprocessor = TipsProcessor.from_pretrained(".")\n'
            'vision = ort.InferenceSession("vision_model.onnx")\ntext = ort.InferenceSession("text_model.onnx")\n'
            'pixels = processor(images=image, return_tensors="pt")["pixel_values"].numpy()\n'
            'last_hidden_state, alt_text, synthetic = vision.run(None, {"pixel_values": pixels})\n'
            'tokens = {k: v.numpy() for k, v in processor(text=["a dog"], return_tensors="pt").items()}\n'
            "(text_embeds,) = text.run(None, tokens)\n```"
        )
    else:
        files = "`vision_model.pt2`, `text_model.pt2` (`torch.export` programs)"
        usage = (
            '```python\nimport torch\nvision = torch.export.load("vision_model.pt2").module()\n'
            'text = torch.export.load("text_model.pt2").module()\n'
            "last_hidden_state, alt_text, synthetic = vision(pixel_values)\n"
            "text_embeds = text(input_ids, attention_mask)\n```"
        )
    parity_line = _parity_line(parity)
    return f"""# TIPS exported for serving

Files: {files}, and the processor files (`TipsProcessor.from_pretrained(this folder)`).

| tower | inputs | outputs |
|---|---|---|
| vision | `pixel_values` float32 (batch, 3, height, width): RGB in [0, 1], no mean/std; height and width multiples of {patch} (any size: the position grid is resized inside the graph, bilinear with antialiasing) | `last_hidden_state` (batch, {1 + vision.num_register_tokens} + h·w, {vision.hidden_size}) = [CLS-1 (alt-text), CLS-2 (synthetic), patches row-major]; `alt_text_embeds`, `synthetic_embeds` (batch, {vision.hidden_size}) |
| text | `input_ids`, `attention_mask` int64 (batch, length ≤ {text.max_position_embeddings}) | `text_embeds` (batch, {text.hidden_size}): masked mean of the tokens |

Embeddings are not normalised. Zero-shot logits: `normalize(image) @ normalize(text).T / temperature` with temperature
{temperature[0]} for the alt-text head and {temperature[1]} for the synthetic head.

{usage}

{parity_line}
"""


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def export(
    model,
    processor,
    output_dir: str | os.PathLike,
    fmt: str = "onnx",
    verify: bool = True,
    overwrite: bool = False,
) -> ExportResult:
    """Export both towers of a [`TipsModel`] (or a DPT model of `tips_hf.modeling.modeling_dense_tips`) as ONNX
    (`fmt="onnx"`) or `torch.export` programs (`fmt="torch"`) with the processor files and a README into `output_dir` (written to a temporary sibling and renamed: never half a
    folder). With `verify`, the files are reloaded and compared with eager PyTorch; a difference above 1e-4 raises."""
    from ..conversion.writer import atomic_folder

    if fmt not in ("onnx", "torch"):
        raise ValueError(f"fmt must be 'onnx' or 'torch', got {fmt!r}.")
    model = model.float().eval()
    with atomic_folder(output_dir, overwrite=overwrite) as staging:
        if fmt == "onnx":
            files = export_onnx_files(model, staging)
            runners = onnx_runners(staging) if verify else {}
        else:
            programs = export_programs(model)
            files = []
            for kind, program in programs.items():
                torch.export.save(program, str(staging / f"{kind}_model.pt2"))
                files.append(f"{kind}_model.pt2")
            runners = (
                program_runners({k: torch.export.load(str(staging / f)) for k, f in zip(programs, files)})
                if verify
                else {}
            )
        parity = check_parity(model, runners) if verify else {}
        bad = {kind: value for kind, value in parity.items() if not value <= PARITY_TOLERANCE}
        if bad:
            raise RuntimeError(f"exported towers differ from eager PyTorch by more than {PARITY_TOLERANCE}: {bad}")
        if processor is not None:
            processor.save_pretrained(str(staging))
        _write_text(staging / "README.md", _export_readme(fmt, model, parity))
        meta = {
            "format": fmt,
            "opset": ONNX_OPSET if fmt == "onnx" else None,
            "torch": torch.__version__,
            "model_class": type(model).__name__,
            **{f"{kind}_inputs": list(io[0]) for kind, io in tower_io(model).items()},
            **{f"{kind}_outputs": list(io[1]) for kind, io in tower_io(model).items()},
            "patch_size": model.config.vision_config.patch_size,
            "temperature": None if is_dense(model) else [float(t) for t in model.temperature.detach().cpu()],
            "parity_max_abs": parity,
        }
        _write_text(staging / "export_config.json", json.dumps(meta, indent=2) + "\n")
        written = sorted(p.name for p in staging.iterdir())
    return ExportResult(Path(output_dir), written, parity)


__all__ = [
    "ONNX_OPSET",
    "PARITY_TOLERANCE",
    "ExportResult",
    "check_parity",
    "export",
    "is_dense",
    "export_onnx_files",
    "export_programs",
    "onnx_runners",
    "parity_text_inputs",
    "parity_vision_inputs",
    "program_runners",
]
