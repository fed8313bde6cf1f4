"""Capacity planning: the buildout pipeline in megawatts, a Monte Carlo of its delays, and the plan."""
