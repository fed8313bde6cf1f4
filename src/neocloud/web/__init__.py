"""Pages people look at: the dashboard and the reports, rendered from the same data as the API."""
