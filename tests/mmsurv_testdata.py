"""Where the tests find ../shared (real public data), importable from any test folder.

Test folders have no ``__init__.py``, so ``from conftest import ...`` would pick whichever
``conftest`` pytest imported first; this module has a unique name instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# MMSURV_SHARED points elsewhere (e.g. a worktree one level deeper than the usual checkout)
SHARED = Path(os.environ.get("MMSURV_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path below ../shared, or skip the test when ../shared (or that file) is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (real public data in ../shared, present in CI)")
    return path
