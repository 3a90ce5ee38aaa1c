"""chemoscreen mechanics core."""
