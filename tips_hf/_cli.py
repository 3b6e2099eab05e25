# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""What the console entry points share: input errors end as one line on stderr and exit code 2, like argparse's."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._extras import missing_package_message


def run_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], Any],
    input_errors: type[Exception] | tuple[type[Exception], ...],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse `argv` with `parser` and call `run(args)`; returns the exit code: 0, or 2 after printing
    `<prog>: error: <message>` (no traceback) when `run` raises one of `input_errors`, or needs an optional package
    that is not installed (the message names the extra that brings it)."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except input_errors as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        if (message := missing_package_message(error)) is None:
            raise
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0
