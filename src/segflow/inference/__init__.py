"""segflow.inference."""
