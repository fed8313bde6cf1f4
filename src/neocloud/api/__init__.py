"""The REST API: FastAPI routes over the controller, bearer tokens, Prometheus metrics."""
