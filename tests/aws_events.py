"""Synthetic Lambda events, shaped as API Gateway and function URLs send them (tests and bench/)."""

import json
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

API_HOST = "abc123.execute-api.us-east-1.amazonaws.com"  # a REST API's own domain
URL_HOST = "abc123.lambda-url.us-east-1.on.aws"  # a function URL's
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
CONTEXT = SimpleNamespace(function_name="agent-mail-test", aws_request_id="c0ffee", memory_limit_in_mb=512)


def _body(body: Any) -> str | None:
    return body if body is None or isinstance(body, str) else json.dumps(body)


def rest_api_event(method: str, path: str, body: Any = None, headers: dict | None = None,
                   query: dict[str, list[str]] | None = None) -> dict:
    """A REST API (v1) proxy event, stage "api", for a route without path parameters."""
    headers = {"Host": API_HOST, "X-Forwarded-Proto": "https", "X-Forwarded-Port": "443", **(headers or {})}
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": {name: values[-1] for name, values in query.items()} if query else None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/api{path}",
            "stage": "api",
            "domainName": API_HOST,
            "apiId": "abc123",
            "requestId": "c0ffee",
            "identity": {"sourceIp": "203.0.113.7"},
        },
        "body": _body(body),
        "isBase64Encoded": False,
    }


def http_api_event(method: str, path: str, body: Any = None, headers: dict | None = None,
                   query: dict[str, list[str]] | None = None) -> dict:
    """An HTTP API or function URL (v2) event: lower-case headers, the query as a raw string."""
    headers = {"host": URL_HOST, "x-forwarded-proto": "https", "x-forwarded-port": "443",
               **{name.lower(): value for name, value in (headers or {}).items()}}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": urlencode(query or {}, doseq=True),
        "headers": headers,
        "requestContext": {
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7"},
            "domainName": URL_HOST,
            "stage": "$default",
            "requestId": "c0ffee",
        },
        "body": _body(body),
        "isBase64Encoded": False,
    }


def rpc(method: str, params: dict | None = None, id: int | str = 1) -> dict:
    return {"jsonrpc": "2.0", "id": id, "method": method} | ({} if params is None else {"params": params})


def tool_call(name: str, arguments: dict, id: int | str = 1) -> dict:
    return rpc("tools/call", {"name": name, "arguments": arguments}, id)
