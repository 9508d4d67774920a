"""``python -m ppgen.cli``: the ``ppgen`` command."""

import sys

from ppgen.cli import main

sys.exit(main())
