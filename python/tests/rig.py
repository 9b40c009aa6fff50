"""A bramble for one test, with each process its own (``bramble serve``, ``bramble-worker``),
so a test can kill the host, start odd workers, or read logs. Real processes, real QUIC on
loopback, a profile in a temporary directory."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bramble
from bramble.cluster import _bramble


def lease_port(keep: list[Any]) -> int:
    """A loopback UDP port below the kernel's ephemeral range (so no socket bound to port 0
    can take it meanwhile), locked against other test processes; the lock lives in ``keep``."""
    import socket

    locks = Path("/tmp/bramble-test-ports")
    locks.mkdir(exist_ok=True)
    start = 20000 + (os.getpid() * 7919) % 12000
    for k in range(12000):
        port = 20000 + (start - 20000 + k) % 12000
        f = open(locks / f"{port}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            f.close()
            continue
        keep.append(f)
        return port
    raise RuntimeError("no free port")


class Rig:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.bin = _bramble()
        self.worker_bin = str(Path(self.bin).with_name("bramble-worker"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._locks: list[Any] = []
        self.port = lease_port(self._locks)
        out = self.bramble("init", "--listen", f"127.0.0.1:{self.port}")
        assert out.returncode == 0, out.stderr

    def env(self) -> dict[str, str]:
        env = dict(os.environ, BRAMBLE_HOME=str(self.home))
        env.pop("BRAMBLE_BUNDLE", None)
        return env

    def bramble(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.bin, *args], env=self.env(), capture_output=True, text=True, timeout=60
        )

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log
        )
        log.close()

    def serve(self, *extra: str) -> None:
        self.spawn("host", [self.bin, "serve", *extra])

    def worker(self, i: int, python: str | None = None, *extra: str) -> None:
        """Enrolls ``w{i}`` (once) and starts it with one slot (its engine runs ``python``)."""
        bundle = self.home / "default" / "workers" / f"w{i}.json"
        if not bundle.exists():
            out = self.bramble("enroll", f"w{i}")
            assert out.returncode == 0, out.stderr
        argv = [self.worker_bin, "--bundle", str(bundle), "--slots", "1"]
        argv += ["--python", python or sys.executable, *extra]
        self.spawn(f"w{i}", argv)

    def signal(self, name: str, sig: int) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()

    def client(self) -> bramble.Client:
        return bramble.Client(bundle=str(self.home / "default" / "security" / "client.json"))

    def status(self) -> list[dict[str, Any]]:
        out = self.bramble("--json", "status")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def log(self, name: str) -> str:
        try:
            return (self.home / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def wait_until(self, what: str, check: Any, timeout: float = 30) -> None:
        """Waits until ``check()`` (a question to the host: its status rows, its engines) is
        true. The host has no way to push those, so this asks again every 50 ms."""
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def close(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in self._locks:
            f.close()
