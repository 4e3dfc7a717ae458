"""``python -m models.serve serve --run ...``: the ``motion-ssl`` console script's code."""

import sys

from models.serve.cli import main

sys.exit(main())
