"""Converters between TIPS checkpoint formats; one key table per format lives in `tips_hf.layouts_tips`."""

from .official import ConversionResult, convert_official, infer_official_config
from .verify import format_parity, verify_model

__all__ = ["ConversionResult", "convert_official", "format_parity", "infer_official_config", "verify_model"]
