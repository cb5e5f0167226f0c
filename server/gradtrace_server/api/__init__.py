"""The REST API routers (``/api/v1/...``) and their shared dependencies."""
