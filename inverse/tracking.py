"""The edge of the calibration: check and reserve its outputs, write them atomically, log an MLflow run,
register the law.

Order (what a failure at each step leaves is in docs/inverse.md, "Guarantees"):

1. :func:`prepare_outputs`, before the fit: ``--out`` (not a file, its folder creatable and writable: a
   staging directory ``.OUT.tmp_HOST_PID_*`` is created beside it), the registered name, and the store
   (probed like ``sweep`` does, opened, the experiment ensured). It also cleans what killed calibrations
   left: staging directories of dead processes, and their runs still RUNNING (marked KILLED; their model
   versions that no alias points at are deleted).
2. :func:`log_calibration`, after the fit: the outputs are written into the staging directory; a run in
   experiment ``chemoscreen-calibration`` (tagged with host and pid) gets params, metrics and the
   directory as artifacts; the law is logged in chemoscreen's safe model format
   (:mod:`chemoscreen.models`: JSON and numeric arrays, never pickle) and registered as a new version of
   ``lfp-chemomech``; the staging directory is renamed into place (an existing ``OUT`` is kept aside);
   last, alias ``champion`` moves to the new version (unless ``promote=False``) and the run is FINISHED.
   Any failure (an exception, Ctrl-C) rolls back: the alias points where it pointed before, the new
   version is deleted, the previous ``OUT`` is back, the run is FAILED and no temporary folder remains.

Default store: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` with
artifacts in ``mlartifacts/`` beside the database file (``./mlartifacts`` for the default). The names
and the store helpers are :mod:`chemoscreen.store`'s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chemoscreen.io import host_name, owner_prefix, remove_stale, stale_owned
from chemoscreen.store import (
    ALIAS,
    CALIBRATION_EXPERIMENT,
    MODEL_NAME,
    TRACKING_FIELD,
    absolute_tracking_uri,
    ensure_experiment,
    open_store,
    probe_tracking_uri,
    resolve_tracking_uri,
    sqlite_path,
)
from inverse.images import file_sha256
from mechanics.errors import InputError


def write_outputs(cal, directory: Path, truth: dict | None = None) -> list[Path]:
    """calibration.json, residual.npz and the PNGs into an existing ``directory``."""
    from inverse.plots import plot_law, plot_maps

    written = [directory / "calibration.json", directory / "residual.npz", directory / "law.png"]
    written[0].write_text(cal.to_json())
    with open(written[1], "wb") as fh:
        np.savez_compressed(fh, **cal.residual_arrays())
    plot_law(cal, written[2], truth)
    for i, maps in enumerate(cal.residual):
        written.append(plot_maps(maps, directory / f"maps_p{i}.png", title=f"particle {i}"))
    return written


def _metrics(cal) -> dict:
    fit, ident = cal.fit, cal.identifiability
    out = cal.vegard.as_dict()
    out.update({"rmse_strain": float(fit.rmse_strain), "chi2_reduced": float(fit.chi2_reduced),
                "lambda": float(fit.smoothness_lambda), "dof": float(fit.dof),
                "n_pixels": float(fit.n_pixels), "downweighted_fraction": float(fit.downweighted_fraction),
                "n_hotspots": float(fit.n_hotspots)})
    out.update({f"time_{k}": float(v) for k, v in fit.timings_s.items()})
    if fit.pcg_solves is not None:
        out.update({"pcg_solves": float(fit.pcg_solves), "pcg_iterations": float(fit.pcg_iterations)})
    out["condition_number"] = float(ident.condition_number)
    out["n_unconstrained_knots"] = float(np.sum(~ident.constrained))
    for i, r in enumerate(cal.registration):
        out[f"p{i}_shift_dy_px"], out[f"p{i}_shift_dx_px"] = map(float, r["shift_px"])
    return out


def _params(cal) -> dict:
    settings, fit = cal.settings, cal.fit
    return {"n_knots": len(cal.knots_X), "monotone": settings.monotone, "plane": settings.plane,
            "lambda_rule": fit.lambda_rule, "n_particles": fit.n_particles,
            "law_class": type(cal.law).__name__, "solver": fit.solver, "device": fit.device,
            "strain_psf_nm": settings.strain_psf_nm, "composition_psf_nm": settings.composition_psf_nm,
            "rim": fit.rim}


OUT_FIELD = "--out"
REGISTER_FIELD = "--register"
# tags of a calibration run that let a later calibration recognise it as left RUNNING by a killed process
HOST_TAG = "chemoscreen.host"
PID_TAG = "chemoscreen.pid"
KIND_TAG = "chemoscreen.kind"


@dataclass
class CalibrationOutputs:
    """Where a calibration's results go, checked and reserved by :func:`prepare_outputs` before the fit.

    A context manager: leaving the block without a successful :func:`log_calibration` removes the staging
    directory and the folders ``prepare_outputs`` created.

    Attributes:
      out_dir: the output directory (absolute).
      staging: the reserved staging directory beside it.
      created: folders created to hold ``out_dir`` (removed again on failure when empty).
      track: log a run and register the law.
      register: the registered-model name, or None (run without a model version).
      promote: move alias ``champion`` to the new version.
      uri, client, experiment_id: the opened store (``track`` only).
      committed: the outputs are in place and the run is FINISHED.
    """

    out_dir: Path
    staging: Path
    created: list[Path] = field(default_factory=list)
    track: bool = True
    register: str | None = MODEL_NAME
    promote: bool = True
    uri: str | None = None
    client: object = None
    experiment_id: str | None = None
    committed: bool = False

    def discard(self) -> None:
        """Remove the staging directory and the created folders (unless committed)."""
        if self.committed:
            return
        shutil.rmtree(self.staging, ignore_errors=True)
        for folder in reversed(self.created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty

    def __enter__(self) -> CalibrationOutputs:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()


def _staging_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.tmp"


def _aside_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.old"


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise InputError(OUT_FIELD, f"a directory path ({candidate} is a file)", str(folder))
            break
        missing.append(candidate)
    created = []
    try:
        for candidate in reversed(missing):
            candidate.mkdir()
            created.append(candidate)
    except OSError as exc:
        for done in reversed(created):
            with contextlib.suppress(OSError):
                done.rmdir()
        raise InputError(OUT_FIELD, f"a directory that can be created ({exc.strerror or exc})",
                         str(folder)) from None
    return created


def _clean_local_leftovers(out_dir: Path) -> None:
    """Staging and set-aside directories of killed calibrations into the same ``out_dir``."""
    remove_stale(out_dir.parent, _staging_prefix(out_dir))
    for aside in stale_owned(out_dir.parent, _aside_prefix(out_dir)):
        # killed between setting the previous OUT aside and moving the new one in: put it back
        if not out_dir.exists() and (aside / "previous").is_dir():
            with contextlib.suppress(OSError):
                os.replace(aside / "previous", out_dir)
        shutil.rmtree(aside, ignore_errors=True)


def _clean_dead_runs(client, experiment_id: str) -> list[str]:
    """Mark KILLED the runs of this experiment left RUNNING by calibrations of this host that no longer
    run; their model versions that no alias points at are deleted. Returns the run ids."""
    from chemoscreen.io import process_alive
    from chemoscreen.store import filter_value, search_all_runs

    host = filter_value(host_name(), "host")
    runs = search_all_runs(client, experiment_id,
                           f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = {host}")
    reaped = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if not pid.isdigit() or process_alive(int(pid)):
            continue
        run_id = run.info.run_id
        for found in client.search_model_versions(f"run_id = {filter_value(run_id, 'run')}"):
            # search results carry no aliases (MLflow's SQL store leaves them empty): ask for the version
            if not client.get_model_version(found.name, found.version).aliases:
                client.delete_model_version(found.name, found.version)
        client.set_terminated(run_id, "KILLED")
        reaped.append(run_id)
    return reaped


def prepare_outputs(out_dir, *, tracking_uri: str | None = None, register: str | None = MODEL_NAME,
                    promote: bool = True, experiment: str = CALIBRATION_EXPERIMENT,
                    track: bool = True) -> CalibrationOutputs:
    """Check every output of a calibration and reserve it, before any fitting is done.

    Args:
        out_dir: the output directory (``--out``); an existing directory is replaced on success.
        tracking_uri: the store (``--tracking-uri``; default :func:`chemoscreen.store.resolve_tracking_uri`).
        register: registered-model name (``--register``); None: a run without a model version.
        promote: move alias ``champion`` to the new version.
        experiment: the MLflow experiment (``--experiment``).
        track: log to the store at all (``--no-track``: False; the store is then not checked).

    Returns:
        The :class:`CalibrationOutputs` (use it as a context manager).

    Raises:
        InputError: ``--out`` is a file, lies under a file, or cannot be created or written (read-only
            file system, no permission); ``--register`` is not a valid model name; ``--tracking-uri``
            cannot be reached or opened; ``--experiment`` is deleted. Nothing is left behind.
    """
    from chemoscreen.models import check_model_name

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(OUT_FIELD, "a directory path (a file of that name exists)", str(out_dir))
    if track and register is not None:
        check_model_name(register, REGISTER_FIELD)
    uri = None
    if track:
        # absolute: MLflow caches one store engine per URI string, so a relative SQLite URI would keep
        # writing to the folder of its first use after the working directory changes
        uri = absolute_tracking_uri(resolve_tracking_uri(tracking_uri))
        probe_tracking_uri(uri)
        _probe_sqlite_writable(uri)
    created = _make_folders(out_dir.parent)
    try:
        staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=owner_prefix(_staging_prefix(out_dir))))
    except OSError as exc:
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise InputError(OUT_FIELD, f"a directory in a writable folder ({exc.strerror or exc})",
                         str(out_dir)) from None
    outputs = CalibrationOutputs(out_dir, staging, created, track, register, promote, uri)
    with _discard_on_error(outputs):
        _clean_local_leftovers(out_dir)
        if track:
            outputs.client = _open(uri)
            outputs.experiment_id = ensure_experiment(outputs.client, experiment, uri)
            _clean_dead_runs(outputs.client, outputs.experiment_id)
    return outputs


@contextlib.contextmanager
def _discard_on_error(outputs: CalibrationOutputs):
    try:
        yield
    except BaseException:
        outputs.discard()
        raise


def _probe_sqlite_writable(uri: str) -> None:
    """A SQLite store must be writable: MLflow retries an unwritable one for about 100 s before it fails."""
    path = sqlite_path(uri)
    if path is None or str(path) in ("", ":memory:"):
        return
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            fd, probe = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.probe-")
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        expected = f"a SQLite store this user can write ({exc.strerror or exc})"
        raise InputError(TRACKING_FIELD, expected, uri) from None


def _open(uri: str):
    """The store, or an InputError naming ``--tracking-uri`` when it exists but cannot be used."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return open_store(uri)
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        expected = f"an MLflow store that opens ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        raise InputError(TRACKING_FIELD, expected, uri) from None


def log_calibration(cal, *, out_dir=None, tracking_uri: str | None = None, register: str | None = MODEL_NAME,
                    promote: bool = True, inputs=None, experiment: str = CALIBRATION_EXPERIMENT,
                    track: bool = True, truth: dict | None = None, outputs: CalibrationOutputs | None = None):
    """Write ``out_dir`` atomically and (``track``) log the run and register the law; returns the
    calibration with its ``mlflow`` section filled (``run_id``, ``model_uri = models:/NAME/VERSION``).

    Args:
        cal: the :class:`~inverse.result.Calibration`.
        out_dir: the output folder, as in :func:`prepare_outputs` (called here unless ``outputs``, its
            result made before the fit, is given); so are the next five.
        tracking_uri: the MLflow store.
        register: registered model name (None: no version).
        promote: move the ``champion`` alias to the new version.
        experiment: MLflow experiment of the run.
        track: log the run at all.
        inputs: paths of the image files (their sha256 go into calibration.json); default the sources
            recorded when the sets were loaded.
        truth: ``truth_*`` arrays of a synthetic set, drawn in the law plot.
        outputs: the reserved outputs from :func:`prepare_outputs`; then the other output arguments are
            not used.

    Returns:
        The calibration with ``mlflow`` filled.

    Raises:
        InputError: bad outputs (see :func:`prepare_outputs`) or inputs. Whatever fails, the store and
            ``out_dir`` are as they were (see the module docstring).
    """
    from dataclasses import replace

    if outputs is None:
        if out_dir is None:
            raise InputError("out_dir", "the output directory (or outputs from prepare_outputs)", None)
        with prepare_outputs(out_dir, tracking_uri=tracking_uri, register=register, promote=promote,
                             experiment=experiment, track=track) as reserved:
            return log_calibration(cal, inputs=inputs, truth=truth, outputs=reserved)
    if outputs.committed or not outputs.staging.is_dir():
        raise InputError("outputs", "outputs reserved by prepare_outputs and not used yet",
                         str(outputs.out_dir))
    if inputs is not None:
        cal = replace(cal, inputs=[{"path": str(p), "sha256": file_sha256(Path(p))} for p in inputs])
    return _Commit(outputs).run(cal, truth)


class _Commit:
    """The steps of :func:`log_calibration` and the undo of each one that was done.

    Subclasses (the kinetics fit) change what is written (:meth:`_write`) and logged (:meth:`_log`, built
    from :meth:`_open_run` and :meth:`_register`); the order of the steps and their undo stay here.
    """

    kind = "calibration"  # the run's kind tag
    run_name = "calibration"

    def __init__(self, outputs: CalibrationOutputs) -> None:
        self.out = outputs
        self.client = outputs.client
        self.run_id: str | None = None
        self.version: str | None = None
        self.created_model = False
        self.aside: Path | None = None
        self.moved_in = False
        self.previous_alias: str | None = None
        self.alias_moved = False

    def run(self, result, truth=None):
        out = self.out
        try:
            self._write(result, truth)
            if out.track:
                result = self._log(result)
            self._move_in()
            if out.track and self.version is not None and out.promote:
                self._promote()
            if out.track:
                self.client.set_terminated(self.run_id, "FINISHED")
        except BaseException:
            self._undo()
            raise
        out.committed = True
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
        return result

    def _write(self, cal, truth) -> None:
        write_outputs(cal, self.out.staging, truth)

    def _open_run(self, metrics: dict, params: dict) -> None:
        """Create the run (tags: kind, host, pid), log ``metrics`` and ``params`` and the staged outputs."""
        import time

        from mlflow.entities import Metric, Param

        out, client = self.out, self.client
        tags = {KIND_TAG: self.kind, HOST_TAG: host_name(), PID_TAG: str(os.getpid())}
        self.run_id = client.create_run(out.experiment_id, run_name=self.run_name, tags=tags).info.run_id
        now = int(time.time() * 1000)
        client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                         params=[Param(k, str(v)) for k, v in params.items()])
        client.log_artifacts(self.run_id, str(out.staging))

    def _register(self, model, artifact_path: str, **kwargs) -> str | None:
        """Log ``model`` under ``artifact_path`` and register it as ``out.register`` (noting whether the
        registered model is new, for the undo); returns the model URI."""
        from mlflow.exceptions import MlflowException

        from chemoscreen.models import log_model

        try:
            self.client.get_registered_model(self.out.register)
        except MlflowException:
            self.created_model = True
        self.version = log_model(self.client, self.run_id, model, artifact_path=artifact_path,
                                 register=self.out.register, **kwargs)
        return f"models:/{self.out.register}/{self.version}" if self.version else None

    def _log_json(self, name: str, text: str) -> None:
        """Rewrite the staged ``name`` (now holding the MLflow ids) and log it."""
        (self.out.staging / name).write_text(text)
        self.client.log_artifact(self.run_id, str(self.out.staging / name))

    def _log(self, cal):
        self._open_run(_metrics(cal), _params(cal))
        model_uri = None
        if self.out.register is not None:
            model_uri = self._register(cal.law.to("cpu"), "law", samples=cal.law_samples,
                                       metadata={"axes": ["a", "b", "c"], "unit": "strain (1)",
                                                 "X": "Li site fraction"})
        cal = cal.with_mlflow(self.run_id, model_uri)
        self._log_json("calibration.json", cal.to_json())
        return cal

    def _move_in(self) -> None:
        """Rename the staging directory to ``out_dir``; an existing one is set aside (removed on success)."""
        out_dir = self.out.out_dir
        if out_dir.exists():
            if not out_dir.is_dir():
                raise InputError(OUT_FIELD, "a directory path (a file of that name exists)", str(out_dir))
            prefix = owner_prefix(_aside_prefix(out_dir))
            self.aside = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=prefix))
            os.replace(out_dir, self.aside / "previous")
        os.replace(self.out.staging, out_dir)
        self.moved_in = True

    def _promote(self) -> None:
        from mlflow.exceptions import MlflowException

        name = self.out.register
        try:
            self.previous_alias = str(self.client.get_model_version_by_alias(name, ALIAS).version)
        except MlflowException:
            self.previous_alias = None
        self.alias_moved = True
        self.client.set_registered_model_alias(name, ALIAS, self.version)

    def _undo(self) -> None:
        """Undo what was done, newest first; each step is tried even when an earlier one fails."""
        client, name, out = self.client, self.out.register, self.out
        steps = []
        if self.alias_moved:
            steps.append(self._restore_alias)
        if self.version is not None:
            steps.append(lambda: client.delete_model_version(name, self.version))
        if self.created_model:
            steps.append(self._drop_empty_model)
        if self.moved_in or self.aside is not None:
            steps.append(self._move_out)
        if self.run_id is not None:
            steps.append(lambda: client.set_terminated(self.run_id, "FAILED"))
        steps.append(out.discard)
        for step in steps:
            with contextlib.suppress(Exception):
                step()

    def _restore_alias(self) -> None:
        """Point the alias back where it was, unless someone else has moved it since."""
        from mlflow.exceptions import MlflowException

        client, name = self.client, self.out.register
        try:
            current = str(client.get_model_version_by_alias(name, ALIAS).version)
        except MlflowException:
            current = None
        if current != self.version:
            return
        if self.previous_alias is None:
            client.delete_registered_model_alias(name, ALIAS)
        else:
            client.set_registered_model_alias(name, ALIAS, self.previous_alias)

    def _drop_empty_model(self) -> None:
        from chemoscreen.store import filter_value

        name = self.out.register
        if not self.client.search_model_versions(f"name = {filter_value(name, 'register')}"):
            self.client.delete_registered_model(name)

    def _move_out(self) -> None:
        out_dir = self.out.out_dir
        if self.moved_in:
            os.replace(out_dir, self.out.staging)  # discarded with the staging directory
        if self.aside is not None:
            os.replace(self.aside / "previous", out_dir)
            shutil.rmtree(self.aside, ignore_errors=True)


def load_law(model_uri: str, *, tracking_uri: str | None = None, allow_pickle: bool = False):
    """The law module of a registered model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ...);
    evaluates ε⁰(X) → (..., 3) for a tensor X without the training data.

    Read with :func:`chemoscreen.models.load_model`: JSON and numeric arrays only, nothing unpickled.
    ``allow_pickle`` also loads versions an older chemoscreen stored with pickle (runs their code).
    """
    from chemoscreen.models import load_model

    return load_model(model_uri, tracking_uri=tracking_uri, allow_pickle=allow_pickle).model
