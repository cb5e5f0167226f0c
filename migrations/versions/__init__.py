"""Migration scripts, oldest first: 0001 is the base revision."""
