"""The fleet's health policy, in the pure core: what a signal does to a node, which nodes are held
back as hot spares, when a node's active check is due, and whether an interrupted job runs again.
The controller persists and carries out what it decides; the twin plays it in simulated time."""
