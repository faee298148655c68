"""Running it: supervised background processes, readiness, metrics, request logs, doctor.

metrics.py and supervisor.py import nothing of the project, so every layer may use them; the
others sit above store/ and archive/ and serve the transports and the CLI.
"""
