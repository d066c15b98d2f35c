"""Click commands, one module per command group; thin wrappers over the library packages."""
