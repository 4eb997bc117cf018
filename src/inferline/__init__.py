"""inferline: AI inference as durable jobs."""

__version__ = "0.1.0"
