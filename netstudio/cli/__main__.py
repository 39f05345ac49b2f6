"""``python -m netstudio.cli``: same as the ``netstudio`` command."""

import sys

from netstudio.cli import main

if __name__ == "__main__":
    sys.exit(main())
