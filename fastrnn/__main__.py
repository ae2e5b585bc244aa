"""``python -m fastrnn``: the command line of :mod:`fastrnn.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
