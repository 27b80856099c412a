"""segflow.models."""
