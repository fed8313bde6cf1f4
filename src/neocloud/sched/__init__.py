"""The scheduler: gang placement, queue policies, guaranteed quotas, backfill and preemption. Pure and
deterministic."""
