"""earthcast.models."""
