"""Fixtures shared by the Beam jobs' tests."""

import pytest


@pytest.fixture(scope="session")
def worker_pool(tmp_path_factory):
    """(`localhost:PORT` of a running worker pool, its log file): tests/worker_pool.py's, one per
    session (preprocess's and predict's portable tests count the workers it starts as they go)."""
    from tests.worker_pool import running_pool

    with running_pool(tmp_path_factory.mktemp("pool")) as pool:
        yield pool
