"""neocloud: an open control plane for GPU clouds, from megawatts to GPUs to jobs to invoices."""

__version__ = "0.1.0"
