"""The ``temdefect`` command line: thin wrappers over the core modules."""
