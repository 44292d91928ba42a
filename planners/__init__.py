"""earthcast.planners."""
