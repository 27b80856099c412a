"""segflow.viz."""
