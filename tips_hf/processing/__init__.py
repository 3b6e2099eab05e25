# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""The design card's *processing* part: tokenizer, image processor and the processor that joins them.

Self-contained like `tips_hf.modeling` (relative imports within this folder only), so the files travel with a
published folder as remote code. The public classes are re-exported by `tips_hf`.
"""
