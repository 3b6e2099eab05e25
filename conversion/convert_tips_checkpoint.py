#!/usr/bin/env python
"""Convert TIPS checkpoints between formats (same as the `tips-convert` console script).

python conversion/convert_tips_checkpoint.py official --vision V.npz --text T.npz --output DIR ...
"""

import sys

from tips_hf.conversion.cli import main

if __name__ == "__main__":
    sys.exit(main())
