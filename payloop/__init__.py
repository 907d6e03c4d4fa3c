"""payloop: the foundation — settings, money, the database engine, Temporal client helpers, the alerts table and
the PSP decision vocabulary. It imports nothing else of the project; the CLI is in `entrypoints/`."""
