"""``python -m sdlocal``: the same as the ``sdlocal`` command."""

import sys

from sdlocal.cli import main

sys.exit(main())
