"""benchmarks/ lives in the repository, not in the installed package: import it from this checkout."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
