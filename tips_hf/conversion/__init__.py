"""Converters between TIPS checkpoint formats; one key table per format lives in `tips_hf.conversion.layouts`."""

from .dpt import convert_dpt, convert_official_vision, verify_dpt
from .official import ConversionResult, convert_official, infer_official_config
from .verify import format_parity, verify_model

__all__ = [
    "ConversionResult",
    "convert_dpt",
    "convert_official",
    "convert_official_vision",
    "format_parity",
    "infer_official_config",
    "verify_dpt",
    "verify_model",
]
