"""Developer tools that are not part of the engine: fuzz harnesses."""
