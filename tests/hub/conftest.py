"""Hub tests: one local Hub endpoint (127.0.0.1, in a thread of the test process) for the whole session."""

from __future__ import annotations

import pytest
from local_hub import LocalHub


@pytest.fixture(scope="session")
def local_hub():
    hub = LocalHub()
    hub.start()
    yield hub
    hub.stop()
