"""PSP layer: the connector protocol, one module per provider, and the sandbox PSP service."""
