"""The console's pages, one module per area; each reads and acts through the functions the JSON API's routes use."""
