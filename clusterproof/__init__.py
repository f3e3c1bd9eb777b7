"""clusterproof: helpers shared by the suite's fixtures and checks."""

__version__ = "0.1.0"
