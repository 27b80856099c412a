"""segflow.serving."""
