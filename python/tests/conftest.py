"""Fixtures: one local cluster of four engines for most tests (``bramble.Cluster``, as a user
would start it), and a rig of separate processes for tests that kill or configure them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import Rig
from signals import Gate, Signals

import bramble


@pytest.fixture(scope="session")
def cluster() -> Iterator[bramble.Cluster]:
    c = bramble.Cluster(n=4)
    c.start_cluster_sync()
    yield c
    c.stop_cluster_sync()


@pytest.fixture
def client(cluster: bramble.Cluster) -> Iterator[bramble.Client]:
    """A client of the shared cluster; each test starts from empty namespaces."""
    c = cluster.connect_client_sync()
    c[:].clear(block=True)
    yield c
    c.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.fixture
def gate(tmp_path: Path) -> Iterator[Gate]:
    """A gate engines wait at (``signals.through``); closed, releasing them, after the test."""
    g = Gate(tmp_path / "gate")
    yield g
    g.close()


@pytest.fixture
def signals(tmp_path: Path) -> Iterator[Signals]:
    """Lines engines send the test (``signals.signal``)."""
    s = Signals(tmp_path / "signals")
    yield s
    s.close()
