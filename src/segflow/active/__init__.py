"""Active learning: rank by uncertainty, hand images to annotators, take labels back, retrain."""
