"""pocketnet: an experiment platform for compact face recognition."""

__version__ = "0.1.0"
