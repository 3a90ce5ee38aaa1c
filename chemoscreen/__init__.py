"""chemoscreen: project-wide edge helpers that ``inverse``, ``candidates`` and ``screening`` share
(command-line options from settings dataclasses, and later I/O and store helpers). ``mechanics`` stays
pure and never imports this package."""
