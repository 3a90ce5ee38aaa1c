"""chemoscreen: candidates."""
