"""What runs on a node itself: the active health check."""
