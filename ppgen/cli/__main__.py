"""``python -m ppgen.cli``: the ``ppgen`` command."""

import sys

from ppgen.cli import main

if __name__ == "__main__":  # imported (not run), it does nothing
    sys.exit(main())
