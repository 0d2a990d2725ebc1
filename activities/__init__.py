"""Activities: everything that talks to the outside world (providers, merchants)."""
