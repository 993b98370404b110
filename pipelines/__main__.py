"""``python -m pipelines`` (and a MAP, whose entry point is this folder's ``__main__.py``) runs the anomaly-detection app."""

import sys

from pipelines.startup import start_like_the_map

if __name__ == "__main__":
    start_like_the_map()  # before MONAI's first import (pipelines/startup.py)
    from pipelines.squid_app import main

    sys.exit(main())
