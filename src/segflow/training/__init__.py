"""segflow.training."""
