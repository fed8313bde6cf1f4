"""The controller: the core's control loop in real time, between the API, the store and a backend."""
