"""One router per resource: segment, model, health, metrics, page."""
