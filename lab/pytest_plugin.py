"""zlab's pytest plugin (registered as a pytest11 entry point)."""
