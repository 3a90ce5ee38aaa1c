"""Where the sweep's Ray runs: the embedded local instance or a cluster given by address.

``--address`` (else ``RAY_ADDRESS``, else ``local``) picks it. ``local`` starts a private Ray instance
for this process (``ray.init(address="local", num_cpus=...)``); ``auto`` attaches to the cluster this
machine belongs to; ``HOST:PORT`` (the GCS address ``ray start --head`` prints, and what ``ray job
submit`` sets for its entrypoint) and ``ray://HOST:PORT`` (Ray Client) attach to that cluster. A remote
address is probed with a short TCP connect first, because ``ray.init`` itself waits a long time for an
address where nothing listens.

The embedded ``local`` instance is private to this machine's user (docs/cluster.md, "Local Ray"):
every Ray process binds its gRPC and HTTP servers to loopback, the Prometheus ``/metrics`` exporters
are off, and token authentication is on with a token generated for the session (``RAY_AUTH_TOKEN``,
never written to disk) unless the user set one. Attaching to a cluster changes none of this: how a
cluster is exposed is decided where it is started (``ray start``, KubeRay), not here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator

from mechanics.errors import InputError

PROBE_TIMEOUT_S = 5.0
EXPECTED_ADDRESS = "local, auto, HOST:PORT (the Ray GCS address) or ray://HOST:PORT"

# Environment of the embedded instance (read by the driver and inherited by every Ray process it starts):
# - RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray take 127.0.0.1 as the node address (as it does on macOS
#   and Windows), so the GCS, raylets, object managers, workers, agents and the dashboard's and
#   autoscaler's metrics servers bind loopback; ``_node_ip_address="127.0.0.1"`` alone is turned back
#   into the host's address by Ray 2.60 (services.resolve_ip_for_localhost);
# - RAY_enable_metrics_collection=0: no Prometheus exporter at all (it answers without authentication);
# - RAY_AUTH_MODE=token, set explicitly: Ray then prints no "token authentication is enabled" warning.
LOCAL_ENVIRONMENT = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_AUTH_MODE": "token",
}
TOKEN_VARIABLE = "RAY_AUTH_TOKEN"


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
def local_environment() -> Iterator[dict[str, str]]:
    """Set the environment of a private, loopback-only, token-authenticated local Ray for the block.

    The variables of :data:`LOCAL_ENVIRONMENT` and ``RAY_AUTH_TOKEN`` (the user's own if set, else
    32 random bytes in hex) are put into ``os.environ``, where ``ray.init(address="local")`` and the
    processes it starts read them, and restored afterwards. Ray reads two of them when it is imported
    or configured, so the imported module's copies are refreshed as well.

    Yields:
        The variables set (the token included: callers that talk to Ray's HTTP agents need it).
    """
    import ray._private.ray_constants as ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    values = {**LOCAL_ENVIRONMENT, TOKEN_VARIABLE: os.environ.get(TOKEN_VARIABLE) or secrets.token_hex(32)}
    saved = {name: os.environ.get(name) for name in values}
    saved_cluster = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(values)
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import; consulted by services.get_node_ip_address

    def refresh() -> None:  # RayConfig (auth mode, metrics) and the cached token are read once per process
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    refresh()
    try:
        yield values
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        ray_constants.ENABLE_RAY_CLUSTER = saved_cluster
        refresh()


@contextlib.contextmanager
def ray_session(address: str, num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of the block; shut down only what this block started.

    An already initialised Ray (a user's notebook, a Ray job's driver) is used as it is. ``local``
    starts a private instance inside :func:`local_environment` (loopback only, token authentication).
    """
    import ray

    if ray.is_initialized():
        yield
        return
    probe_address(address)
    kwargs: dict = {"logging_level": logging.WARNING}
    with contextlib.ExitStack() as stack:
        if address == "local":  # these may only be set for an instance this process starts
            stack.enter_context(local_environment())
            kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False)
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as exc:
            expected = f"a running Ray cluster ({EXPECTED_ADDRESS}): {exc}"
            raise InputError("--address", expected, address) from None
        try:
            yield
        finally:
            ray.shutdown()
