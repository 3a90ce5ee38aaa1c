"""chemoscreen: inverse."""
