"""`python -m inferline.cli`, as the tests and benchmarks start it."""

import os

from inferline.cli import main

# Inherited by the API processes that `serve --api-processes` starts, so their logs are not held back.
os.environ.setdefault("PYTHONUNBUFFERED", "1")
main()
