"""Ray address handling (resolution order, fail-fast probes) and the embedded local Ray's exposure."""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mechanics.errors import InputError
from screening.cluster import probe_address, ray_session, resolve_address


def test_address_resolution_order(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) == "local"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert resolve_address(None) == "10.0.0.1:6379"
    assert resolve_address("auto") == "auto"


def test_unreachable_address_fails_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(InputError, match="--address"):
            probe_address(address, timeout_s=2.0)
    assert time.perf_counter() - start < 5.0  # refused at once on loopback; bound = timeouts + slack


@pytest.mark.parametrize("address", ["http://127.0.0.1:8265", "nohost", "host:port", "127.0.0.1:"])
def test_malformed_address_names_the_field(address):
    with pytest.raises(InputError, match="--address"):
        probe_address(address)


def test_listening_address_passes():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        probe_address(f"127.0.0.1:{server.getsockname()[1]}", timeout_s=2.0)
    probe_address("local")
    probe_address("auto")


# ---------------------------------------------------------------------------------------------------
# the embedded local Ray: loopback only, token authentication


def _descendants(root: int) -> set[int]:
    """``root`` and every process below it, from /proc (parent pid is field 4 of /proc/PID/stat)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _socket_inodes(pids: set[int]) -> dict[str, int]:
    inodes = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes[target[len("socket:["):-1]] = pid
    return inodes


def _listeners(pids: set[int]) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, int]]:
    """(address, port, pid) of every TCP socket in state LISTEN (0A) owned by ``pids``."""
    inodes = _socket_inodes(pids)
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in inodes:
                    continue
                address_hex, port_hex = fields[1].split(":")
                raw = bytes.fromhex(address_hex)  # host-order 32-bit words
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                address = ipaddress.ip_address(words)
                found.append((address, int(port_hex, 16), inodes[fields[9]]))
    return found


def _is_loopback(address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _http_status(host: str, port: int, headers: dict | None = None) -> int | str:
    """Status of ``GET /`` (or the error's name: a gRPC or raw port does not speak HTTP/1)."""
    request = urllib.request.Request(f"http://{host}:{port}/", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return type(exc).__name__


def _host_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (where a wildcard listener would also answer)."""
    found = set()
    with contextlib.suppress(OSError):
        found.update(info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET))
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        found.add(probe.getsockname()[0])
    return sorted(a for a in found if not ipaddress.ip_address(a).is_loopback)


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="lists listening sockets through /proc")
def test_local_ray_listens_on_loopback_only_and_requires_its_token(monkeypatch, caplog, capfd):
    """Every TCP listener of the embedded Ray's processes is loopback; its HTTP agents want the token.

    Before the fix (Ray 2.60 defaults) the GCS, raylet and workers listened on ``::``, and three
    Prometheus exporters on 0.0.0.0 answered ``GET`` with 200 without any credentials.
    """
    import ray

    from screening.cluster import TOKEN_VARIABLE, local_environment

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    with caplog.at_level(logging.WARNING):
        with ray_session("local", num_cpus=1):
            ray.get(ray.remote(lambda: os.getpid()).remote())  # a worker process exists and listens too
            token = os.environ[TOKEN_VARIABLE]
            listeners = _listeners(_descendants(os.getpid()))
            exposed = [(a, port, pid) for a, port, pid in listeners if not _is_loopback(a)]
            # a wildcard listener is reached through the host's own addresses
            answers = {(str(a), port): [_http_status(h, port) for h in
                                        (_host_addresses() if a.is_unspecified else [str(a)])]
                       for a, port, _ in exposed}
            http_ports = [port for a, port, _ in listeners
                          if _http_status("127.0.0.1", port) == 401]
            authorised = {port: _http_status("127.0.0.1", port, {"Authorization": f"Bearer {token}"})
                          for port in http_ports}
    assert len(listeners) >= 4, listeners  # GCS, raylet, object manager, driver, worker, agents
    assert exposed == [], f"non-loopback listeners {exposed}; GET / answered {answers}"
    # the agents' HTTP servers refuse a request without the token and accept the session's token
    assert http_ports, "no HTTP agent found that asks for the token"
    assert all(status != 401 for status in authorised.values()), authorised
    # Ray 2.60 warns "Token authentication is enabled for this Ray cluster" when the mode is not set
    assert "Token authentication is enabled" not in caplog.text + "".join(capfd.readouterr())
    assert TOKEN_VARIABLE not in os.environ  # the session's token does not outlive it
    with local_environment() as values:
        assert len(values[TOKEN_VARIABLE]) == 64
