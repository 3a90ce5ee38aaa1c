"""Start and stop real servers on 127.0.0.1 for the `cluster` tests (fixtures in conftest.py).

- `postgres`: a throwaway PostgreSQL cluster (Debian packages: `initdb`, `pg_ctl`) in a temporary directory,
  password authentication, listening on 127.0.0.1 only.
- `tracking_server`: the MLflow tracking server exactly as `infra/mlflow/start-server.sh` starts it
  (basic-auth app, served artifacts), with the PostgreSQL backend store and artifacts in a
  temporary directory.
- `ray_cluster`: two Ray nodes on this host (`ray start --head` plus `ray start --address`), token
  authentication, dashboard and job API on 127.0.0.1.

Every server runs in its own session (process group) with a marker variable in its environment; teardown
stops the group and then ends any process still carrying the marker, so nothing outlives the tests and no
process that another user started is touched. Startup and teardown waits are bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
VENV_BIN = Path(sys.executable).parent
MARKER = "CHEMOSCREEN_TEST_SERVER"
LOOPBACK = "127.0.0.1"

# Startup on 2 shared cores: PostgreSQL < 2 s, MLflow ~7 s, each Ray node ~5 s when the machine is idle.
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0


# ----------------------------------------------------------------------------------------------- helpers
def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses with a socket listening on `port`, read from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(FileNotFoundError), open(table) as fh:
            next(fh)
            for line in fh:
                local, state = line.split()[1], line.split()[3]
                address_hex, port_hex = local.split(":")
                if state == "0A" and int(port_hex, 16) == port:  # 0A = LISTEN
                    found.add(_decode_proc_address(address_hex, width))
    return found


def _decode_proc_address(address_hex: str, width: int) -> str:
    raw = bytes.fromhex(address_hex)
    if width == 8:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # /proc stores IPv6 as four little-endian 32-bit words.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def wait_until(ready: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S,
               proc: subprocess.Popen | None = None, log: Path | None = None) -> float:
    """Poll `ready` until it returns True; fail early if `proc` exits. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{tail(log)}")
        try:
            if ready():
                return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.25)
    pytest.fail(f"{what}: not ready after {timeout_s:.0f} s\n{tail(log)}")


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def http_status(url: str, headers: dict[str, str] | None = None, method: str = "GET",
                data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {}, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def marked_pids(marker_value: str) -> list[int]:
    """Processes whose environment carries MARKER=marker_value (children inherit it)."""
    needle = f"{MARKER}={marker_value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def stop_process_group(proc: subprocess.Popen, marker_value: str, sig: int = signal.SIGTERM) -> None:
    """Signal `proc` (SIGTERM: it stops its own children; SIGKILL: its whole session at once, a crash), wait;
    then SIGKILL its session and anything left that carries the marker."""
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if sig == signal.SIGKILL else os.kill)(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=STOP_TIMEOUT_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := marked_pids(marker_value)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    assert not left, f"processes survived teardown: {left}"


def start_group(args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """Start `args` in a new session (its own process group), output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def base_env(marker_value: str) -> dict[str, str]:
    """The test process's environment without Ray/MLflow settings, plus the venv and the marker."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_", "AWS_", "PG"))}
    env.update({MARKER: marker_value, "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


# -------------------------------------------------------------------------------------------- PostgreSQL
@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL server: `uri(db)` is an SQLAlchemy URI for MLflow, `connect(db)` a psycopg2
    connection for checking what MLflow wrote."""

    port: int
    user: str
    password: str = field(repr=False)
    host: str = LOOPBACK

    def uri(self, database: str) -> str:
        return f"postgresql+psycopg2://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def connect(self, database: str):
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=database, connect_timeout=10)

    def query(self, database: str, sql: str, params: tuple = ()) -> list[tuple]:
        with contextlib.closing(self.connect(database)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()


def postgres_bin_dir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        on_path = shutil.which("initdb")
        if on_path is None:
            pytest.skip("PostgreSQL server binaries missing: run infra/scripts/install-postgres.sh")
        return Path(on_path).parent
    return found[-1].parent


# ---------------------------------------------------------------------------------------- MLflow server
@dataclass(frozen=True)
class TrackingServer:
    uri: str
    username: str
    password: str = field(repr=False)
    port: int = 0
    artifacts_dir: Path = Path()
    postgres: Postgres | None = None
    log: Path = Path()

    @property
    def client_env(self) -> dict[str, str]:
        """What a client (the sweep, a Ray job) needs in its environment to log here."""
        return {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_TRACKING_USERNAME": self.username,
                "MLFLOW_TRACKING_PASSWORD": self.password}


# ------------------------------------------------------------------------------------------- Ray cluster
@dataclass
class RayNode:
    proc: subprocess.Popen
    marker_value: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process_group(self.proc, self.marker_value, sig)


@dataclass
class RayCluster:
    gcs_address: str
    dashboard_url: str
    dashboard_port: int
    token: str = field(repr=False)
    env: dict[str, str] = field(repr=False)
    head: RayNode
    worker: RayNode
    root: Path

    def cli(self, *args: str, timeout_s: float = 300,
            token: str | None = None) -> subprocess.CompletedProcess:
        """Run the `ray` CLI against this cluster with its token (or `token` instead)."""
        env = {**self.env, "RAY_AUTH_TOKEN": self.token if token is None else token}
        env.pop(MARKER)  # a CLI call is not part of the cluster; it exits on its own
        return subprocess.run([str(VENV_BIN / "ray"), *args], env=env, capture_output=True, text=True,
                              timeout=timeout_s)

    def rest(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        """GET from the dashboard/job API with the cluster's token, another `token`, or none ("")."""
        token = self.token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return http_status(f"{self.dashboard_url}{path}", headers=headers)

    def alive_nodes(self) -> list[dict]:
        return _alive_nodes(self.dashboard_url, self.token)


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # --block keeps `ray start` in the foreground as the parent of the node's processes: ending its
    # session ends the node, and only this node (`ray stop` would stop every Ray on the machine).
    return start_group([str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats", *args], env, log)


class PortClash(RuntimeError):
    """The dashboard port answered with something other than the dashboard (another listener took it)."""


def _alive_nodes(dashboard_url: str, token: str) -> list[dict]:
    status, body = http_status(f"{dashboard_url}/nodes?view=summary",
                               headers={"Authorization": f"Bearer {token}"})
    if status != 200:
        return []
    try:
        summary = json.loads(body)["data"]["summary"]
    except (ValueError, KeyError, TypeError) as err:
        # seen once: a Ray metrics exporter that had picked the same free port answered with Prometheus text
        raise PortClash(f"{dashboard_url} is not the Ray dashboard: {body[:80]!r}") from err
    return [node for node in summary if node["raylet"]["state"] == "ALIVE"]


@contextlib.contextmanager
def two_node_ray_cluster(num_cpus_per_node: int = 1) -> Iterator[RayCluster]:
    """A head node and one worker node on this host, token authentication, dashboard on 127.0.0.1.

    Ray's own gRPC listeners (GCS, raylets, object managers) bind every interface and advertise the host's
    routable address (Ray resolves 127.0.0.1 to it on purpose); only the token guards them, which the tests
    check. The dashboard/job API is the listener `--dashboard-host` keeps on loopback.
    """
    # Short path: Ray's Unix sockets live below it and must stay under 108 characters.
    root = Path(tempfile.mkdtemp(prefix="csray-", dir="/tmp"))
    token = secrets.token_hex(32)
    (root / "home").mkdir()
    env = base_env("")
    # HOME inside the temporary directory: no ~/.ray/auth_token of the user is read or written.
    env.update({"HOME": str(root / "home"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token,
                "RAY_USAGE_STATS_ENABLED": "0"})
    common = [f"--num-cpus={num_cpus_per_node}", "--num-gpus=0", "--object-store-memory=100000000"]
    nodes: list[RayNode] = []

    def start_node(name: str, args: list[str], expected_nodes: int, dashboard_url: str) -> RayNode:
        marker_value = secrets.token_hex(8)
        log = root / f"{name}.log"
        proc = _ray_start([*args, f"--temp-dir={root / name}", *common], {**env, MARKER: marker_value}, log)
        node = RayNode(proc, marker_value, log)
        nodes.append(node)
        wait_until(lambda: len(_alive_nodes(dashboard_url, token)) == expected_nodes, f"Ray {name} node",
                   proc=node.proc, log=log)
        return node

    try:
        # Ports are picked free and released before Ray binds them, so one of Ray's own listeners can
        # take one first: the metrics exporters get explicit ports too, and a clash restarts the head.
        for attempt in range(3):
            gcs_port, dashboard_port = free_port(), free_port()
            dashboard_url = f"http://{LOOPBACK}:{dashboard_port}"
            try:
                head = start_node("head" if attempt == 0 else f"head{attempt}", [
                    "--head", f"--port={gcs_port}", "--include-dashboard=true",
                    f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dashboard_port}",
                    f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                    f"--metrics-export-port={free_port()}"], expected_nodes=1, dashboard_url=dashboard_url)
                break
            except PortClash:
                nodes.pop().stop()
                if attempt == 2:
                    raise
        worker = start_node("worker", [
            f"--address={LOOPBACK}:{gcs_port}", f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}"], expected_nodes=2, dashboard_url=dashboard_url)
        yield RayCluster(gcs_address=f"{LOOPBACK}:{gcs_port}", dashboard_url=dashboard_url,
                         dashboard_port=dashboard_port, token=token, env=env, head=head, worker=worker,
                         root=root)
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)
