"""Puts the generated `tejido` module (and the library beside it) on the path.

scripts/test-bindings sets TEJIDO_PYTHON_DIR; by default the tests use bindings/generated/python.
"""

import os
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
GENERATED = pathlib.Path(
    os.environ.get("TEJIDO_PYTHON_DIR", HERE.parent.parent / "generated" / "python")
)
if not (GENERATED / "tejido.py").exists():
    raise RuntimeError(f"no generated bindings in {GENERATED}: run scripts/build-bindings first")
sys.path.insert(0, str(GENERATED))
