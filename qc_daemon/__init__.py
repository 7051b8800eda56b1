"""Clinical MRI quality-control node."""

__version__ = "0.1.0"
