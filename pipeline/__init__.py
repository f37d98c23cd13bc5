"""dagger-stages: multi-stage Docker builds in CI, only what a target needs, every stage cached."""

__all__ = ["__version__"]

__version__ = "0.1.0"
