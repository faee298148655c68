"""Settings that are secrets, read from AWS Secrets Manager when a function starts.

On AWS the functions' environment names the secret (APP_SECRET_ARN), not its values: whoever
may read a function's configuration would see values put there, whereas the secret is read
with secretsmanager:GetSecretValue, which only the functions' roles have on it (infra/template.yaml).
Read once per container, at its cold start, into the process's environment before the settings
are: a value changed in the secret reaches containers started after the change (deploy with a
higher SecretsRevision to replace the running ones). Unset APP_SECRET_ARN: nothing to read.
"""

import os
import re

import orjson

from ..config import get_settings

_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,127}")  # what a setting's environment variable looks like


class SecretError(RuntimeError):
    """The secret cannot be used: the function would start with wrong settings, so it does not."""


def load_into_environment(secret_id: str | None = None, client=None) -> list[str]:
    """Put the secret's settings into os.environ, where a variable already set wins; the names set."""
    secret_id = secret_id or os.environ.get("APP_SECRET_ARN")
    if not secret_id:
        return []
    if client is None:
        import boto3  # only on AWS: local mode never needs it

        client = boto3.client("secretsmanager")
    text = client.get_secret_value(SecretId=secret_id).get("SecretString")
    try:
        values = orjson.loads(text or "")
    except orjson.JSONDecodeError:
        values = None
    if not isinstance(values, dict) or not all(_NAME.fullmatch(k) and isinstance(v, str) for k, v in values.items()):
        raise SecretError(
            f"Secret {secret_id} is not a JSON object of settings: put"
            ' {"DATABASE_URL": "...", "TURSO_AUTH_TOKEN": "...", "AUTH_KEYS": "..."} in it (docs/deploy.md).'
        )
    set_here = [name for name in values if name not in os.environ]
    for name in set_here:
        os.environ[name] = values[name]
    get_settings.cache_clear()  # settings read from now on see them
    return set_here
