"""segflow.export."""
