"""Agent Mail: mail, threads and coordination for coding agents."""

__version__ = "0.1.0"
