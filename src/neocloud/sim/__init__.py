"""The digital twin: the core's scheduler driven by a simulated clock over real traces."""
