import sys

from .cli import main

# Guarded: Dask starts worker processes by spawning, which re-imports the main module (here, this one).
if __name__ == "__main__":
    sys.exit(main())
