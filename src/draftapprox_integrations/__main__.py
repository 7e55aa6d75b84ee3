"""``python -m draftapprox_integrations ...``: the ``draftapprox`` command where nothing is installed (a GPU
machine given the source tree on PYTHONPATH)."""

import sys

from .cli import main

sys.exit(main())
