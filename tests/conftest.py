"""Shared fixtures: where the real datasets are, and a small random seed policy."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from adtf.paths import datasets_root


@pytest.fixture(scope="session")
def datasets_dir():
    """``$ADTF_DATASETS`` or ``../shared/datasets``; tests that need it skip loudly if absent."""
    root = datasets_root()
    if not root.is_dir():
        pytest.skip(f"shared datasets not found at {root} (set ADTF_DATASETS)")
    return root


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    """Keep caches written by tests out of the user's ~/.keras, but reuse converted weights."""
    if "ADTF_HOME" not in os.environ:
        os.environ["ADTF_HOME"] = str(tmp_path_factory.mktemp("adtf_home"))
    yield
