"""How a call arrives: HTTP (ASGI locally, Chalice on AWS), MCP (lean path and SDK), the CLI.

Each transport turns a request into `invoke` calls of registry tools and renders the result;
none holds logic of its own.
"""
