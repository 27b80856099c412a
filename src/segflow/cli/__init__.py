"""segflow.cli."""
