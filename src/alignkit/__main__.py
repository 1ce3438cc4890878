"""``python -m alignkit``: the same command line as the ``alignkit`` script."""

import os
import sys

from alignkit.cli import main

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.exit(main())
