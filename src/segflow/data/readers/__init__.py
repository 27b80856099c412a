"""segflow.data.readers."""
