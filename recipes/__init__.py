"""Native MUSE reduction recipes (numba kernels). Importable without musered."""

__version__ = "0.1.0"
