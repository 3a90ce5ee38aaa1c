"""Captured step loops: K adaptive steps replayed as one CUDA graph (launch-free small batches).

A small batch (one 256² particle) leaves a GPU launch-bound: the step's few dozen kernels take longer to
launch from Python than to run. :func:`captured_loop` records ``n_steps`` steps of a stepper, each capped
so no element passes its target time (the inner loop of :func:`mechanics.phasefield.protocols.run_to_times`
between two host synchronisations), into one CUDA graph and replays it: one launch for ``n_steps`` steps.

The capture is used only on CUDA tensors, when the setting allows it (``graphs=True``, or ``"auto"`` for
fields of at most :data:`GRAPH_MAX_CELLS` cells, where launches dominate). Everywhere else, CPU
included, the same steps run in a plain Python loop: the guard (:func:`uses_graph`) decides before any
CUDA call, so a CPU path never touches the CUDA runtime. Both paths run the same step function on the
same inputs, so they compute the same states (the graph replays the recorded kernels).

Requirements on ``step_fn`` (the CH and ACR steppers of this package meet them): a pure function of
(state, dt_cap) without host synchronisation (no ``.item()``, no ``bool(tensor)``), whose output has the
same structure, shapes and dtypes as its input state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from mechanics.errors import InputError

GRAPH_MAX_CELLS = 1 << 20  # "auto" captures fields up to this many cells (batch × grid): launch-bound below


def uses_graph(c: torch.Tensor, graphs: bool | str = "auto") -> bool:
    """Whether :func:`captured_loop` replays a CUDA graph for a field ``c`` under the setting ``graphs``.

    ``False``: never; ``True``: on CUDA tensors; ``"auto"``: on CUDA tensors of at most
    :data:`GRAPH_MAX_CELLS` cells. Never on a CPU tensor, whatever the setting.
    """
    if graphs not in (True, False, "auto"):
        raise InputError("graphs", "True, False or 'auto'", graphs)
    if graphs is False or c.device.type != "cuda":
        return False
    return graphs is True or c.numel() <= GRAPH_MAX_CELLS


def _flatten(tree, leaves: list) -> object:
    """Tensors of ``tree`` (dataclasses, tuples, lists, dicts) appended to ``leaves``; returns the
    tree's skeleton (tensors replaced by their index), which :func:`_unflatten` fills again."""
    if isinstance(tree, torch.Tensor):
        leaves.append(tree)
        return _Leaf(len(leaves) - 1)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return (type(tree), tuple((f.name, _flatten(getattr(tree, f.name), leaves))
                                  for f in dataclasses.fields(tree) if f.init))
    if isinstance(tree, (tuple, list)):
        return (type(tree), tuple(_flatten(x, leaves) for x in tree))
    if isinstance(tree, dict):
        return (dict, tuple((k, _flatten(v, leaves)) for k, v in tree.items()))
    return _Static(tree)


def _unflatten(skeleton, leaves: list):
    if isinstance(skeleton, _Leaf):
        return leaves[skeleton.index]
    if isinstance(skeleton, _Static):
        return skeleton.value
    kind, children = skeleton
    if dataclasses.is_dataclass(kind):
        return kind(**{name: _unflatten(child, leaves) for name, child in children})
    if kind is dict:
        return {k: _unflatten(v, leaves) for k, v in children}
    return kind(_unflatten(x, leaves) for x in children)


@dataclasses.dataclass(frozen=True)
class _Leaf:
    index: int


@dataclasses.dataclass(frozen=True, eq=False)
class _Static:
    value: object

    def __eq__(self, other) -> bool:
        if not isinstance(other, _Static):
            return False
        try:
            return bool(self.value is other.value or self.value == other.value)
        except (TypeError, ValueError, RuntimeError):  # arrays and tensors compare elementwise
            return False

    def __hash__(self) -> int:
        return 0  # statics are compared, not hashed, in the graph cache


def capped_steps(step_fn: Callable, state, target: torch.Tensor | None, n_steps: int):
    """``n_steps`` calls of ``step_fn``; with ``target`` (*batch,) each step is capped at the time left
    to it, and elements within 1e-9 (relative, at least absolute) of it take zero-length steps, as in
    :func:`~mechanics.phasefield.protocols.run_to_times`; no host synchronisation."""
    tolerance = None if target is None else 1e-9 * target.abs().clamp_min(1.0)
    for _ in range(n_steps):
        if target is None:
            state = step_fn(state)
        else:
            remaining = target - state.time
            cap = torch.where(remaining <= tolerance, torch.zeros_like(remaining), remaining)
            state = step_fn(state, cap)
    return state


class _Graph:
    """One recorded loop: static input buffers, the CUDA graph, the static outputs."""

    def __init__(self, step_fn: Callable, state, target: torch.Tensor | None, n_steps: int,
                 warmup: int) -> None:
        leaves: list = []
        self.skeleton = _flatten(state, leaves)
        self.inputs = [t.clone() for t in leaves]
        self.target = None if target is None else target.clone()
        side = torch.cuda.Stream(device=leaves[0].device)
        side.wait_stream(torch.cuda.current_stream(leaves[0].device))
        # warm-up on a side stream (as torch.cuda.graphs asks): compiles, FFT plans, caches
        with torch.cuda.stream(side):
            for _ in range(warmup):
                capped_steps(step_fn, _unflatten(self.skeleton, self.inputs), self.target, 1)
        torch.cuda.current_stream(leaves[0].device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            out = capped_steps(step_fn, _unflatten(self.skeleton, self.inputs), self.target, n_steps)
        out_leaves: list = []
        self.out_skeleton = _flatten(out, out_leaves)
        self.outputs = out_leaves

    def __call__(self, leaves: list, target: torch.Tensor | None):
        for buffer, value in zip(self.inputs, leaves, strict=True):
            buffer.copy_(value)
        if target is not None:
            self.target.copy_(target)
        self.graph.replay()
        # the outputs are the graph's own buffers, overwritten by the next replay: hand out copies
        return _unflatten(self.out_skeleton, [t.clone() for t in self.outputs])


class CapturedLoop:
    """``run(state, target=None) -> state``: ``n_steps`` steps of ``step_fn`` (see :func:`captured_loop`).

    ``replays`` counts the calls served by a CUDA graph; ``failure`` holds why a capture failed (then
    that input structure runs the plain loop from there on), None when none did.
    """

    def __init__(self, step_fn: Callable, n_steps: int, graphs: bool | str, warmup: int) -> None:
        self.step_fn, self.n_steps, self.graphs, self.warmup = step_fn, n_steps, graphs, warmup
        self.replays = 0
        self.failure: str | None = None
        self._recorded: list[tuple[tuple, object, _Graph | None]] = []

    def __call__(self, state, target: torch.Tensor | None = None):
        if not uses_graph(state.c, self.graphs):
            return capped_steps(self.step_fn, state, target, self.n_steps)
        leaves: list = []
        skeleton = _flatten(state, leaves)
        key = (tuple((t.shape, t.dtype, t.device) for t in leaves), target is None or
               (target.shape, target.dtype, target.device))
        graph = next((g for k, sk, g in self._recorded if k == key and sk == skeleton), False)
        if graph is False:
            try:
                graph = _Graph(self.step_fn, state, target, self.n_steps, self.warmup)
            except RuntimeError as exc:  # an operation the capture does not allow (e.g. a host copy)
                graph, self.failure = None, f"{type(exc).__name__}: {exc}"[:500]
            self._recorded.append((key, skeleton, graph))
        if graph is None:
            return capped_steps(self.step_fn, state, target, self.n_steps)
        self.replays += 1
        return graph(leaves, target)


def captured_loop(step_fn: Callable, n_steps: int, graphs: bool | str = "auto",
                  warmup: int = 3) -> CapturedLoop:
    """Factory: ``run(state, target=None) -> state`` takes ``n_steps`` steps of ``step_fn``.

    With ``target`` (*batch,) every step is capped at the time left to it (see :func:`capped_steps`),
    otherwise ``step_fn(state)`` is called uncapped. Where :func:`uses_graph` allows it (CUDA), the
    ``n_steps`` steps are recorded once per input structure (shapes, dtypes, device, whether a target is
    given) as one CUDA graph and replayed; elsewhere they run as a Python loop. Either way the host is
    not synchronised inside the ``n_steps`` steps. A step that the capture refuses (an eager step may copy
    a Python scalar to the device; the fused steps keep such constants in their kernels) runs the plain
    loop instead, and the returned :class:`CapturedLoop` says why in ``failure``.

    Args:
      step_fn: ``step_fn(state, dt_cap=None) -> state`` of :func:`~mechanics.phasefield.cahn_hilliard.
        cahn_hilliard` or :func:`~mechanics.phasefield.reaction.allen_cahn_reaction` (fused or eager).
      n_steps: steps per call (≥ 1): the K of a loop that synchronises with the host every K steps.
      graphs: ``True``, ``False`` or ``"auto"`` (see :func:`uses_graph`).
      warmup: uncaptured steps run once before recording (compilation, FFT plans).
    """
    if not isinstance(n_steps, int) or isinstance(n_steps, bool) or n_steps < 1:
        raise InputError("n_steps", "an integer ≥ 1", n_steps)
    uses_graph(torch.empty(0), graphs)  # checks the setting now, not at the first call
    return CapturedLoop(step_fn, n_steps, graphs, warmup)
