"""Where the sweep's Ray runs: the embedded local instance or a cluster given by address.

``--address`` (else ``RAY_ADDRESS``, else ``local``) picks it. ``local`` starts a private Ray instance
for this process (``ray.init(address="local", num_cpus=...)``); ``auto`` attaches to the cluster this
machine belongs to; ``HOST:PORT`` (the GCS address ``ray start --head`` prints, and what ``ray job
submit`` sets for its entrypoint) and ``ray://HOST:PORT`` (Ray Client) attach to that cluster. A remote
address is probed with a short TCP connect first, because ``ray.init`` itself waits a long time for an
address where nothing listens.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator

from mechanics.errors import InputError

PROBE_TIMEOUT_S = 5.0
EXPECTED_ADDRESS = "local, auto, HOST:PORT (the Ray GCS address) or ray://HOST:PORT"


def resolve_address(explicit: str | None) -> str:
    """``--address``, else ``RAY_ADDRESS``, else ``local``."""
    return (explicit or os.environ.get("RAY_ADDRESS") or "local").strip()


def _host_port(address: str) -> tuple[str, int]:
    body = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = body.rpartition(":")
    if not sep or not host or not port.isdigit() or "/" in body:
        raise InputError("--address", EXPECTED_ADDRESS, address)
    return host.strip("[]"), int(port)


def probe_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`InputError` (field ``--address``) when a remote Ray address does not answer."""
    if address in ("local", "auto"):
        return
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        expected = (f"a reachable Ray cluster ({EXPECTED_ADDRESS}); "
                    f"connecting to {host}:{port} failed within {timeout_s:g} s: {exc}")
        raise InputError("--address", expected, address) from None


@contextlib.contextmanager
def ray_session(address: str, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of the block; shut down only what this block started.

    An already initialised Ray (a user's notebook, a Ray job's driver) is used as it is.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    probe_address(address)
    kwargs: dict = {"logging_level": logging.WARNING}
    if address == "local":  # these may only be set for an instance this process starts
        kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as exc:
        raise InputError("--address", f"a running Ray cluster ({EXPECTED_ADDRESS}): {exc}", address) from None
    try:
        yield
    finally:
        ray.shutdown()
