# Copyright 2026 The tips-hf authors. Licensed under the Apache License, Version 2.0.
"""The design card's *modeling* part: configurations and models (dual encoder, towers, DPT heads, backbone).

The `*_tips.py` modules import only torch, transformers and each other (relative imports within this folder), so
`save_pretrained` copies them into a flat model folder that loads with `trust_remote_code=True` where tips-hf is not
installed. The public classes are re-exported by `tips_hf`.
"""
