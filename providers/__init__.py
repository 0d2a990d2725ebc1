"""Provider adapters (one module or package each) and the sandbox provider."""
