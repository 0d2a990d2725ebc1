"""tempay: durable payment settlement on Temporal."""

__version__ = "0.1.0"
