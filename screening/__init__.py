"""chemoscreen: screening."""
