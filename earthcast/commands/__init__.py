"""earthcast.commands."""
