"""A Beam worker pool for tests of the portable path (`python -m apache_beam.runners.worker.worker_pool_main`).

The pool starts SDK worker processes on request; a job reaches them as Flink, Spark and Dataflow
jobs do: serialized into a pipeline proto, run by separate Python processes that import the
package themselves, in another working directory than the launcher's. tests/beam_jobs/conftest.py
serves it as the `worker_pool` fixture; `workers_started` counts the workers it has started.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Iterator, Tuple

POOL_START_TIMEOUT_S = 120
STARTING_WORKER = "Starting worker with command"  # worker_pool_main logs this once per worker it starts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_until_listening(proc: subprocess.Popen, port: int, log_path) -> None:
    deadline = time.monotonic() + POOL_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker pool exited with {proc.returncode}:\n{log_path.read_text()}")
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"worker pool not listening on {port} after {POOL_START_TIMEOUT_S} s")


def _stop(proc: subprocess.Popen) -> None:
    """Stop the pool and any worker still running: they are the process group of the session the
    pool was started in. (SIGTERM, not SIGINT: a background shell starts children ignoring SIGINT.)"""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def running_pool(folder) -> Iterator[Tuple[str, object]]:
    """(`localhost:PORT` of a running worker pool, its log file) while the context lasts. The pool
    starts each worker with a bare `python`, so this interpreter's bin folder goes first on PATH;
    it runs in `folder` (keep it empty), so workers import the installed package, not the checkout
    in their working directory."""
    log_path = folder / "pool.log"
    port = _free_port()
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port", str(port)],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_until_listening(proc, port, log_path)
        yield f"localhost:{port}", log_path
    finally:
        _stop(proc)


def workers_started(log_path) -> int:
    """How many SDK worker processes the pool has started so far (from its log)."""
    return log_path.read_text(errors="replace").count(STARTING_WORKER)
