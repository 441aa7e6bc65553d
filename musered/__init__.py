"""musered: a reduction manager for VLT/MUSE data with its own recipes."""

__version__ = "0.1.0"
