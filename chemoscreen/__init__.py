"""Project-wide edge helpers shared by inverse, candidates and screening (files, the MLflow store)."""
