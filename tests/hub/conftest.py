"""A local Hugging Face Hub server (tests/hub/hub_server.py: olah plus upload routes) for the session, and a helper
that runs Python against it in a fresh process.

huggingface_hub reads HF_ENDPOINT, HF_HUB_OFFLINE and HF_HOME when it is imported, and this test session runs with
HF_HUB_OFFLINE=1 (tests/conftest.py), so every push and pull runs in a subprocess whose environment points at the
server and at its own cache.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"
TOKEN = "hub-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalHub:
    endpoint: str
    root: Path

    def env(self, cache: Path, *, token: bool = True, offline: bool = False) -> dict[str, str]:
        """The environment of a client process: this Hub, the cache `cache`, the token or none."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_OFFLINE"))}
        env.update(
            HF_ENDPOINT=self.endpoint, HF_HOME=str(cache), HF_HUB_OFFLINE="1" if offline else "0",
            HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", OMP_NUM_THREADS="1",
            PYTHONPATH=os.pathsep.join([str(SRC), str(HERE.parent)]),
        )
        if token:
            env["HF_TOKEN"] = TOKEN
        return env

    def run(self, argv: list[str], cache: Path, *, token: bool = True, offline: bool = False,
            exit_code: int = 0) -> subprocess.CompletedProcess:
        """`python *argv` in a fresh interpreter against this Hub; fail unless it exits with `exit_code`."""
        result = subprocess.run([sys.executable, *argv], env=self.env(cache, token=token, offline=offline),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == exit_code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-4000:]}"
        return result

    def python(self, code: str, cache: Path, *argv: str, **options) -> subprocess.CompletedProcess:
        """`run` of `code` with `sys.argv[1:] == argv`."""
        return self.run(["-c", code, *argv], cache, **options)


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory) -> LocalHub:
    root = tmp_path_factory.mktemp("hub")
    port = free_port()
    log = open(root / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, str(HERE / "hub_server.py"), "--root", str(root / "data"), "--port", str(port),
         "--token", TOKEN],
        stdout=log, stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/api/validate-yaml", data=b'{"content": ""}', timeout=1)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the local Hub server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(0.2)
    yield LocalHub(endpoint, root)
    server.terminate()
    server.wait(timeout=10)
    log.close()
