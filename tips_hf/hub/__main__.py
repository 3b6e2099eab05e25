"""`python -m tips_hf.hub` is `tips-publish`."""

import sys

from .cli import main

sys.exit(main())
