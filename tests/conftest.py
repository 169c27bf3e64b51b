import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "executors"))
sys.path.insert(0, str(ROOT / "tests"))

REFERENCE = ROOT / "tests" / "fixtures" / "reference"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE
