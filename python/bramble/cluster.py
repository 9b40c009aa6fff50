"""``Cluster``: a local bramble (a host and ``n`` workers on this machine) for trying things
and for tests, like ipyparallel's ``Cluster``: ``with bramble.Cluster(n=4) as c:`` gives a
connected ``Client``. It runs ``bramble cluster start`` in a throwaway profile."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .client import Client

__all__ = ["Cluster"]


def _bramble() -> str:
    """The ``bramble`` program: ``BRAMBLE_BIN``, the PATH, or this checkout's build."""
    if os.environ.get("BRAMBLE_BIN"):
        return os.environ["BRAMBLE_BIN"]
    found = shutil.which("bramble")
    if found:
        return found
    target = Path(__file__).resolve().parents[2] / "target"
    candidates = (target / "release" / "bramble", target / "debug" / "bramble")
    builds = [p for p in candidates if p.exists()]
    if builds:
        return str(max(builds, key=lambda p: p.stat().st_mtime))
    raise FileNotFoundError(
        "bramble not found: put it on the PATH, set BRAMBLE_BIN, or build it (cargo build)"
    )


class Cluster:
    """A host and ``n`` local workers of ``slots`` engines each, in a temporary profile. The
    engines run this very Python (``sys.executable``), so they have its packages."""

    def __init__(self, n: int = 4, slots: int = 1, python: str | None = None) -> None:
        self.n = n
        self.slots = slots
        self.python = python or sys.executable
        self.home: str | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bundle(self) -> str:
        """The local client bundle."""
        if self.home is None:
            raise RuntimeError("the cluster is not running")
        return os.path.join(self.home, "default", "security", "client.json")

    def start_cluster_sync(self) -> None:
        """Starts the host and the workers (returns once the host listens)."""
        self.home = tempfile.mkdtemp(prefix="bramble-cluster-")
        env = dict(os.environ, BRAMBLE_HOME=self.home)
        env.pop("BRAMBLE_BUNDLE", None)
        log = open(os.path.join(self.home, "cluster.log"), "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                _bramble(),
                "cluster",
                "start",
                "-n",
                str(self.n),
                "--slots",
                str(self.slots),
                "--listen",
                "127.0.0.1:0",
                "--python",
                self.python,
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        log.close()
        # The host writes its port into the bundle once it listens.
        deadline = time.monotonic() + 60
        while not self._listening():
            if self._process.poll() is not None:
                raise RuntimeError(f"bramble cluster start exited: {self.log()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the cluster did not start: {self.log()}")
            time.sleep(0.05)

    def _listening(self) -> bool:
        try:
            with open(self.bundle) as f:
                hosts = json.load(f)["hosts"]
        except (OSError, ValueError, KeyError):
            return False
        return bool(hosts) and not hosts[0].endswith(":0")

    def connect_client_sync(self, timeout: float = 60) -> Client:
        """A Client, once every engine is up."""
        client = Client(bundle=self.bundle)
        client.wait_for_engines(self.n * self.slots, timeout=timeout)
        return client

    def start_and_connect_sync(self) -> Client:
        self.start_cluster_sync()
        return self.connect_client_sync()

    def stop_cluster_sync(self) -> None:
        """Stops the host and workers (Ctrl-C, as in a terminal) and removes the profile."""
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)
            self.home = None

    def log(self) -> str:
        """What the host and workers logged so far."""
        if self.home is None:
            return ""
        try:
            with open(os.path.join(self.home, "cluster.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self) -> Client:
        self._client = self.start_and_connect_sync()
        return self._client

    def __exit__(self, *exc: Any) -> None:
        try:
            self._client.close()
        finally:
            self.stop_cluster_sync()
