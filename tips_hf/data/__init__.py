"""Embedded datasets: procedural spatial scenes for offline TIPS pretraining and dense evaluation."""

from . import scenes
from .scenes import *  # noqa: F403 - the public names are listed once, in `scenes.__all__`

__all__ = scenes.__all__
