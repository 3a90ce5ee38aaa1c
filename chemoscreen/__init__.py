"""chemoscreen: project-wide edge helpers that ``inverse``, ``candidates`` and ``screening`` share
(options derived from settings dataclasses, atomic file writes, the MLflow store and its names, the safe
model format). ``mechanics`` stays pure and never imports this package."""
