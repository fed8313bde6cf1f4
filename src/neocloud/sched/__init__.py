"""The scheduler: gang placement, queue policies, backfill and preemption. Pure and deterministic."""
