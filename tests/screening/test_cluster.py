"""Ray address handling: resolution order and fail-fast probes (no Ray started here)."""

from __future__ import annotations

import socket
import time

import pytest

from mechanics.errors import InputError
from screening.cluster import probe_address, resolve_address


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
