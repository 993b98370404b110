"""A throwaway shared MLflow tracking server for tests: a PostgreSQL cluster on 127.0.0.1 and
``mlflow server`` on top of it, as a hospital team runs one, started and torn down by the
test itself (so ``python -m pytest`` is all CI needs).

PostgreSQL's ``initdb`` refuses to run as root: as root, the cluster is created and run as
the unprivileged ``nobody`` user (the cluster folder belongs to it, in a folder of its own
under the system temporary directory, which ``nobody`` can reach). Authentication is
``trust`` on 127.0.0.1 only; the cluster lives as long as the context.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the PostgreSQL server programs the cluster needs
POSTGRES_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_UNPRIVILEGED = "nobody"


def missing_requirements() -> str | None:
    """Why a PostgreSQL-backed server cannot be started here, or None."""
    missing = [p for p in POSTGRES_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"PostgreSQL server programs not on PATH: {', '.join(missing)}"
    try:
        import psycopg2  # noqa: F401  (MLflow's PostgreSQL driver)
    except ImportError:
        return "psycopg2 is not installed (pip install -e '.[test]')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(_UNPRIVILEGED)
        except KeyError:
            return f"running as root and there is no {_UNPRIVILEGED!r} user to run PostgreSQL as"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(owner: pwd.struct_passwd | None) -> dict:
    """``subprocess`` arguments that run a program as ``owner`` (None: as this user)."""
    if owner is None:
        return {}
    return {
        "user": owner.pw_uid,
        "group": owner.pw_gid,
        "extra_groups": [],
        "env": {**os.environ, "HOME": "/tmp", "USER": owner.pw_name},
    }


def _run(args: list[str], owner, timeout: float) -> None:
    result = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
        check=False,
        **_as_owner(owner),
    )
    if result.returncode:
        raise RuntimeError(
            f"{' '.join(args)} failed ({result.returncode}): {result.stderr or result.stdout}"
        )


@contextmanager
def postgres_cluster(timeout: float = 30.0) -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 at a free port; yields its SQLAlchemy URI
    (``postgresql+psycopg2://mlflow@127.0.0.1:<port>/postgres``: SQLAlchemy 2.1
    defaults to psycopg 3 otherwise). Stopped and deleted on exit."""
    owner = pwd.getpwnam(_UNPRIVILEGED) if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="squid_pg_"))
    data, port = root / "data", free_port()
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    try:
        _run(
            ["initdb", "-D", str(data), "-U", "mlflow", "--auth=trust", "-E", "UTF8", "--no-sync"],
            owner,
            timeout,
        )
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off"
        _run(
            [
                "pg_ctl",
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ],
            owner,
            timeout,
        )
        try:
            yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/postgres"
        finally:
            _run(
                ["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"], owner, timeout
            )  # throwaway
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, timeout: float = 60.0) -> Iterator[str]:
    """``mlflow server`` on 127.0.0.1 at a free port, runs in ``backend_uri``, artifacts
    proxied into ``artifacts``; yields its URL once it answers. Stopped on exit."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = artifacts.parent / "mlflow_server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server, log, timeout)
        yield url
    finally:
        _stop(server)


def _wait_until_up(url: str, server: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited ({server.returncode}): {log.read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(
        f"mlflow server at {url} did not answer within {timeout:.0f} s: {log.read_text()[-2000:]}"
    )


def _stop(process: subprocess.Popen) -> None:
    """Stop a server started in its own session, its workers included."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()
