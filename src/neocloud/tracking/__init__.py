"""Experiment tracking: an MLflow server (neocloud's own or the operator's), what a tenant may ask
of it through neocloud, and the calls neocloud makes to log what it knows of each job."""
