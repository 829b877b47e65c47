"""`python -m autoplace` is the `autoplace` script (useful where the venv's bin/ is not on PATH)."""
import sys

from .cli import main

sys.exit(main())
