"""Reference parameter sets, one module per source."""
