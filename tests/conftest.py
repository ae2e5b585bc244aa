"""Shared test fixtures."""
import os

import pytest

_SHARED = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir,
                                       "shared", "data"))


@pytest.fixture(scope="session")
def shared_data():
    """Path of ``../shared/data`` beside the repository root; skips when it is absent."""
    if not os.path.isdir(_SHARED):
        pytest.skip(f"shared data directory not found at {_SHARED} "
                    f"(expected ../shared/data next to the repository root)")
    return _SHARED
