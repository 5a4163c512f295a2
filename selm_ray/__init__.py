"""selm-ray: online preference optimization (SELM, Self-Rewarding) on Ray."""

__version__ = "0.1.0"
