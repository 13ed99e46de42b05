"""ssmbench: benchmark state space models (S4, Mamba, Mamba-2) against attention."""

__version__ = "0.1.0"
