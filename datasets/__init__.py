"""earthcast.datasets."""
