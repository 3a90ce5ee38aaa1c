"""The safe model format: how chemoscreen stores models in MLflow and loads them back without running code.

A stored model is a folder of two files, logged as artifacts of its MLflow run and registered as a model
version whose source is that folder:

- ``chemoscreen-model.json`` (the manifest)::

      {"schema": "chemoscreen.model/1", "kind": "eigenstrain-law/piecewise-linear",
       "config": {...}, "tensors": {"knots_X": {"shape": [11], "dtype": "float64"}, ...},
       "tensors_sha256": "...", "n_samples": 64, "metadata": {...}}

- ``tensors.npz``: the numeric arrays, read with ``numpy.load(..., allow_pickle=False)``.

Loading reads JSON and plain numeric arrays and rebuilds the object with the builder this module holds
for ``kind`` (:data:`KINDS`, an allowlist in code, never taken from the store): nothing stored is
unpickled or executed. A model of another kind, a tensor of another shape or dtype, a checksum that does
not match, or a file that is not numeric is an :class:`~mechanics.errors.InputError` naming ``model``.

Posterior samples (the calibration's bootstrap replicates, for propagating the law's uncertainty) travel
in the same files: ``samples`` (n_samples, ...) of the kind's parameters, rebuilt by the kind's builder
into ``StoredModel.samples``.

Model versions written by chemoscreen before this format (``mlflow.pytorch`` with pickle serialization)
load only with ``allow_pickle=True`` (``--allow-pickle-model`` on the command line): unpickling runs any
code the file holds, so do it only for a store whose every writer you trust.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chemoscreen.io import owner_prefix, remove_stale
from mechanics.errors import InputError

SCHEMA = "chemoscreen.model/1"
MANIFEST = "chemoscreen-model.json"
TENSORS = "tensors.npz"
FORMAT_TAG = "chemoscreen.format"
_NUMERIC = {"float64", "float32", "int64", "int32", "bool"}
_MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few kB; refuse to parse megabytes of JSON from a store
# Registered-model names: MLflow refuses '/' and ':' only after the work is done; '@' would split
# models:/NAME@ALIAS, and quotes, backslashes or spaces cannot travel through filters and shells intact.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}")
# the temporary folder a model's files pass through on their way to and from the store
TMP_PREFIX = "chemoscreen-model"


@dataclass(frozen=True)
class ModelKind:
    """How one kind of model becomes (config, tensors) and back.

    Args:
      name: the manifest's ``kind``.
      encode: ``obj -> (config, tensors)``: a JSON-able dict and a dict of numpy arrays.
      decode: ``(config, tensors) -> obj``.
      decode_sample: ``(config, tensors, sample) -> obj`` for one posterior sample, where ``sample`` is
        one row of the stored ``samples`` array; None when the kind has no samples.
      matches: ``obj -> bool``, which objects :func:`write_model` encodes with this kind.
    """

    name: str
    encode: Callable[[object], tuple[dict, dict[str, np.ndarray]]]
    decode: Callable[[dict, dict[str, np.ndarray]], object]
    matches: Callable[[object], bool]
    decode_sample: Callable[[dict, dict[str, np.ndarray], np.ndarray], object] | None = None


@dataclass(frozen=True)
class StoredModel:
    """A model read back from the store.

    Attributes:
      model: the rebuilt object (e.g. a :class:`mechanics.laws.PiecewiseLinearLaw`).
      kind: the manifest's kind.
      samples: posterior samples rebuilt as objects of the same kind (empty when none were stored).
      metadata: the manifest's free-form metadata (JSON values).
      uri: where it was loaded from.
    """

    model: object
    kind: str
    samples: tuple = ()
    metadata: dict = field(default_factory=dict)
    uri: str = ""


# ---------------------------------------------------------------------------------------------------
# the kinds


def _piecewise_encode(law) -> tuple[dict, dict[str, np.ndarray]]:
    values = law.values().detach().cpu().numpy().astype(np.float64)
    knots = law.knots_X.detach().cpu().numpy().astype(np.float64)
    # the raw parameters too, so that a monotone law (softplus increments) comes back bit for bit
    free = law.free.detach().cpu().numpy().astype(np.float64)
    return {"monotone": bool(law.monotone)}, {"knots_X": knots, "values": values, "free": free}


def _piecewise_decode(config: dict, tensors: dict[str, np.ndarray]):
    import torch

    from mechanics.laws import PiecewiseLinearLaw

    law = PiecewiseLinearLaw(tensors["knots_X"], tensors["values"], monotone=bool(config.get("monotone")))
    if tensors["free"].shape != tuple(law.free.shape) or not np.isfinite(tensors["free"]).all():
        raise InputError("free", f"finite parameters of shape {tuple(law.free.shape)}", tensors["free"].shape)
    with torch.no_grad():
        law.free.copy_(torch.from_numpy(tensors["free"]))
    return law


def _piecewise_sample(config: dict, tensors: dict[str, np.ndarray], sample: np.ndarray):
    from mechanics.laws import PiecewiseLinearLaw

    # a bootstrap replicate need not be monotone even when the fit was constrained
    return PiecewiseLinearLaw(tensors["knots_X"], sample, monotone=False)


def _vegard_encode(law) -> tuple[dict, dict[str, np.ndarray]]:
    return {}, {"misfit": law.misfit.detach().cpu().numpy().astype(np.float64)}


def _vegard_decode(config: dict, tensors: dict[str, np.ndarray]):
    from mechanics.laws import VegardLaw

    return VegardLaw(tensors["misfit"])


def _is(class_name: str) -> Callable[[object], bool]:
    return lambda obj: type(obj).__name__ == class_name and type(obj).__module__ == "mechanics.laws"


KINDS: dict[str, ModelKind] = {
    "eigenstrain-law/piecewise-linear": ModelKind(
        "eigenstrain-law/piecewise-linear", _piecewise_encode, _piecewise_decode, _is("PiecewiseLinearLaw"),
        _piecewise_sample),
    "eigenstrain-law/vegard": ModelKind("eigenstrain-law/vegard", _vegard_encode, _vegard_decode,
                                        _is("VegardLaw")),
}


def register_kind(kind: ModelKind) -> None:
    """Add a kind (called by the package that defines the model class, at import of that package)."""
    KINDS[kind.name] = kind


def _kind_of(obj) -> ModelKind:
    for kind in KINDS.values():
        if kind.matches(obj):
            return kind
    raise InputError("model", f"an object of a stored kind ({', '.join(sorted(KINDS))})", type(obj).__name__)


# ---------------------------------------------------------------------------------------------------
# folder <-> object


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_model(obj, directory, *, samples=None, metadata: Mapping | None = None) -> Path:
    """Write ``obj`` (and optional posterior ``samples``, an array (n, ...)) into ``directory``.

    Args:
      obj: a model of one of :data:`KINDS` (e.g. a ``PiecewiseLinearLaw``).
      directory: an existing or new folder; the two files are written into it.
      samples: posterior samples of the kind's parameters, e.g. (n, 3, K) knot values of a law.
      metadata: JSON values stored beside the model (provenance, units).

    Returns:
      The folder.
    """
    kind = _kind_of(obj)
    config, tensors = kind.encode(obj)
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    if samples is not None:
        if kind.decode_sample is None:
            raise InputError("samples", f"no samples for a model of kind {kind.name}", np.shape(samples))
        samples = np.ascontiguousarray(np.asarray(samples, dtype=np.float64))
        if samples.ndim < 1 or samples.shape[0] < 1 or not np.isfinite(samples).all():
            raise InputError("samples", "a finite array (n_samples, ...) with n_samples >= 1", samples.shape)
        tensors["samples"] = samples
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / TENSORS, "wb") as fh:
        np.savez(fh, **tensors)
    manifest = {
        "schema": SCHEMA, "kind": kind.name, "config": config,
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in tensors.items()},
        "tensors_sha256": _sha256(directory / TENSORS),
        "n_samples": int(samples.shape[0]) if samples is not None else 0,
        "metadata": dict(metadata or {}),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return directory


def _bad(expected: str, got: object = None):
    return InputError("model", expected, got)


def read_model(directory, *, uri: str = "") -> StoredModel:
    """Rebuild a model from a folder written by :func:`write_model`; nothing in it is executed.

    Raises:
      InputError: (field ``model``) the folder is not a chemoscreen model, or any part of it does not
        match its manifest.
    """
    directory = Path(directory)
    manifest_path, tensors_path = directory / MANIFEST, directory / TENSORS
    if not manifest_path.is_file() or not tensors_path.is_file():
        expected = f"a folder with {MANIFEST} and {TENSORS} (chemoscreen's model format)"
        raise _bad(expected, uri or str(directory))
    if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise _bad(f"a manifest below {_MAX_MANIFEST_BYTES} bytes", manifest_path.stat().st_size)
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"a JSON manifest ({exc})", uri) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        raise _bad(f"schema {SCHEMA}", manifest.get("schema") if isinstance(manifest, dict) else manifest)
    kind = KINDS.get(manifest.get("kind"))
    if kind is None:
        raise _bad(f"a model kind this version of chemoscreen knows ({', '.join(sorted(KINDS))})",
                   manifest.get("kind"))
    declared = manifest.get("tensors")
    config = manifest.get("config", {})
    if not isinstance(declared, dict) or not isinstance(config, dict):
        raise _bad("'tensors' and 'config' objects in the manifest", uri)
    if _sha256(tensors_path) != manifest.get("tensors_sha256"):
        raise _bad(f"{TENSORS} with the checksum its manifest states (the file was changed)", uri)
    try:
        with np.load(tensors_path, allow_pickle=False) as data:
            tensors = {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError) as exc:  # object arrays, truncated or foreign files
        raise _bad(f"a numeric {TENSORS} ({type(exc).__name__}: {exc})", uri) from None
    if set(tensors) != set(declared):
        raise _bad(f"the tensors the manifest lists ({sorted(declared)})", sorted(tensors))
    for name, array in tensors.items():
        spec = declared[name]
        dtype = str(array.dtype)
        if not isinstance(spec, dict) or dtype not in _NUMERIC or dtype != spec.get("dtype") \
                or list(array.shape) != spec.get("shape"):
            raise _bad(f"tensor {name!r} of the declared numeric dtype and shape ({spec})",
                       (str(array.dtype), list(array.shape)))
    samples = tensors.pop("samples", None)
    try:
        model = kind.decode(config, tensors)
        rebuilt = () if samples is None else tuple(kind.decode_sample(config, tensors, s) for s in samples)
    except InputError as exc:
        raise _bad(f"a valid {kind.name} ({exc})", uri) from None
    metadata = manifest.get("metadata", {})
    return StoredModel(model, kind.name, rebuilt, metadata if isinstance(metadata, dict) else {}, uri)


# ---------------------------------------------------------------------------------------------------
# MLflow


def check_model_name(name: object, field: str = "register") -> str:
    """Check a registered-model name before any work is done with it.

    Args:
        name: the name (e.g. ``--register``).
        field: the option or argument it came from, named in the error.

    Returns:
        ``name``.

    Raises:
        InputError: ``name`` is not 1 to 256 letters, digits, ``.``, ``_`` or ``-`` starting with a letter
            or digit (MLflow itself refuses ``/`` and ``:``; ``@`` would break ``models:/NAME@ALIAS``).
    """
    if not isinstance(name, str) or _MODEL_NAME.fullmatch(name) is None:
        raise InputError(field, "a model name of 1 to 256 letters, digits, '.', '_' or '-' that starts "
                         "with a letter or digit", name)
    return name


def _model_tmpdir() -> str:
    """A new temporary folder named by its owner; those of killed processes are removed first."""
    remove_stale(tempfile.gettempdir(), TMP_PREFIX)
    return tempfile.mkdtemp(prefix=owner_prefix(TMP_PREFIX))


def _version_source(model_uri: str, tracking_uri: str | None) -> str:
    """The artifact URI behind ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``models:/NAME/latest``
    (resolved through the registry of ``tracking_uri``); other URIs are returned as they are."""
    from mlflow import MlflowClient

    if not model_uri.startswith("models:/"):
        return model_uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name, sep, alias = model_uri[len("models:/"):].partition("@")
    if sep:
        return client.get_model_version_by_alias(name, alias).source
    name, _, ref = name.partition("/")
    if ref == "latest":
        from chemoscreen.store import filter_value

        versions = client.search_model_versions(f"name = {filter_value(name, 'model')}")
        if not versions:
            raise _bad("a registered model with at least one version", model_uri)
        ref = str(max(int(v.version) for v in versions))
    return client.get_model_version(name, ref).source


def log_model(client, run_id: str, obj, *, artifact_path: str, register: str | None = None,
              samples=None, metadata: Mapping | None = None) -> str | None:
    """Log ``obj`` as artifacts ``<artifact_path>/`` of run ``run_id`` and register it as a new version.

    Args:
      client: an ``mlflow.MlflowClient`` on the store.
      run_id: the run that produced the model.
      artifact_path: folder name inside the run's artifacts (e.g. ``law``).
      register: registered model name; None logs the files without a version.
      samples: as in :func:`write_model`.
      metadata: as in :func:`write_model`.

    Returns:
      The new version number as a string, or None when ``register`` is None.

    Raises:
      InputError: (field ``register``) a name :func:`check_model_name` refuses, before anything is logged.
    """
    from mlflow.exceptions import MlflowException

    if register is not None:
        check_model_name(register)
    tmp = _model_tmpdir()
    try:
        write_model(obj, tmp, samples=samples, metadata=metadata)
        client.log_artifacts(run_id, tmp, artifact_path=artifact_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if register is None:
        return None
    try:
        client.create_registered_model(register)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process registered it first
            raise
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(register, source=source, run_id=run_id,
                                          tags={FORMAT_TAG: SCHEMA})
    return str(version.version)


def load_model(model_uri: str, *, tracking_uri: str | None = None, allow_pickle: bool = False) -> StoredModel:
    """Load a model version (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/ID/PATH``).

    Args:
      model_uri: the model's URI.
      tracking_uri: the store (default: MLflow's current one).
      allow_pickle: also load a version an older chemoscreen stored with pickle (``mlflow.pytorch``).
        Unpickling executes code from the store: only for a store whose writers you all trust.

    Raises:
      InputError: (field ``model``) the version cannot be found, is not in chemoscreen's format (and
        ``allow_pickle`` is False), or does not match its manifest.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    tmp = _model_tmpdir()
    try:
        try:
            source = _version_source(model_uri, tracking_uri)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=tmp,
                                                             tracking_uri=tracking_uri))
        except (MlflowException, OSError) as exc:
            raise _bad("a model version in the store (models:/NAME/VERSION or models:/NAME@ALIAS)",
                       f"{model_uri} ({type(exc).__name__}: {str(exc)[:200]})") from None
        if (local / MANIFEST).is_file():
            return read_model(local, uri=model_uri)
        if (local / "MLmodel").is_file():
            if not allow_pickle:
                raise _bad("a model in chemoscreen's safe format; this version was stored with pickle by an "
                           "older chemoscreen: register it again with `chemoscreen calibrate`, or, only if "
                           "you trust every writer of this store, load it with --allow-pickle-model",
                           model_uri)
            import mlflow.pytorch

            legacy = mlflow.pytorch.load_model(model_uri, map_location="cpu")
            return StoredModel(legacy, "legacy-pickle", (), {}, model_uri)
        raise _bad(f"a folder with {MANIFEST} (chemoscreen's model format)", model_uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
