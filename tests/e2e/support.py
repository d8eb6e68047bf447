"""Helpers of the browser end-to-end tests: free ports, servers in their own process group, Chromium.

Every server is started with `start_new_session=True` (its own process group: `dagster dev` spawns
a webserver, a daemon and code servers) with SIGINT/SIGTERM at their defaults, and stopped with
SIGTERM to the leader, then to the group, then SIGKILL to whatever is left; its output goes to a
log file in the output folder.
"""

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Debian's Chromium; never a browser download (impossible here). Override with RECDISTILL_CHROMIUM.
DEFAULT_CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chromium_path() -> str:
    return os.environ.get("RECDISTILL_CHROMIUM", DEFAULT_CHROMIUM)


class Server:
    """A server process in its own process group, logging to `log_path`."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path,
                 cwd: Path = REPO) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_signals,
        )

    def log_tail(self, chars: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_http(self, url: str, timeout_s: float = 120.0) -> None:
        """Until `url` answers 200; fails early (with the log) if the process exits."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name}: {url} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the leader, then the group; SIGKILL the group if anything outlives the grace."""
        pgid = self.process.pid  # leader of its own session: pgid == pid
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=grace_s)
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if not _group_alive(pgid):
                    break
                os.killpg(pgid, sig)
                deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
                while _group_alive(pgid) and time.monotonic() < deadline:
                    time.sleep(0.2)
            if self.process.poll() is None:
                self.process.wait(timeout=5)
        finally:
            self._log.close()


def _default_signals() -> None:
    """In the child, before exec: SIGINT and SIGTERM back to their defaults.

    A process started from a shell's background job inherits SIGINT (and, under some tools, SIGTERM)
    as *ignored*; `dagster dev` maps SIGTERM to its SIGINT handler, so it would then ignore both.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Zombies of the group still count for killpg(0); treat a group of zombies as gone.
    return any(_pgid_of(pid) == pgid and not _is_zombie(pid) for pid in _all_pids())


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"
