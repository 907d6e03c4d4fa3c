"""payloop: shared settings, money types, database engine and the CLI."""
