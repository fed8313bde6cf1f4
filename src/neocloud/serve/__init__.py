"""Services in the core: how many replicas a service wants, and how its replicas roll to a new
spec; pure, as the scheduler is, so the twin can run them too."""
