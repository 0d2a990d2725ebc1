"""tempay: durable payment settlement on Temporal."""

# The one place the version is written: pyproject.toml reads it from here at build time
# ([tool.setuptools.dynamic]), and the installed metadata carries it from there.
__version__ = "0.1.0"
