"""Building fleets from files: the YAML fleet format and the Alibaba openb node list."""
