"""segflow.data."""
