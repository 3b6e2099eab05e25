"""Serving exports of TipsModel: ONNX (`torch.onnx.export(dynamo=True)`) and `torch.export` programs of the vision and
text towers with dynamic batch, image size and text length, checked against eager PyTorch (`tips-export`)."""

from .exporters import (
    ONNX_OPSET,
    PARITY_TOLERANCE,
    ExportResult,
    check_parity,
    export,
    export_onnx_files,
    export_programs,
    onnx_runners,
    program_runners,
)
from .graph import ExportableText, ExportableVision, graph_position_resize, resize_weights

__all__ = [
    "ONNX_OPSET",
    "PARITY_TOLERANCE",
    "ExportResult",
    "ExportableText",
    "ExportableVision",
    "check_parity",
    "export",
    "export_onnx_files",
    "export_programs",
    "graph_position_resize",
    "onnx_runners",
    "program_runners",
    "resize_weights",
]
