"""``python -m alignkit``: the same command line as the ``alignkit`` script."""

import os
import sys

from alignkit.cli import main

if __name__ == "__main__":  # importing the module (as the import-every-module test does) runs nothing
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
