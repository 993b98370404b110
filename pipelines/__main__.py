"""``python -m pipelines`` (and a MAP, whose entry point is this folder's ``__main__.py``) runs the SQUID app."""

import sys

from pipelines.squid_app import main

if __name__ == "__main__":
    sys.exit(main())
