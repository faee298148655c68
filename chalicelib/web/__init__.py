"""The human web UI: a mail client for the people overseeing the agents (docs/ui.md).

Pages are built from the tool registry (pages.py), rendered with Jinja2 (autoescaped) and
markdown-it-py + nh3, and served by both transports from the same framework-free code:
`pages.WebUI(settings).handle(http.Request) -> http.Response`. Nothing is imported here, so
that a Lambda cold start serving the API does not load the templates.
"""
