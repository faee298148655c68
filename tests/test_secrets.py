"""The functions' secret settings, read from Secrets Manager (moto) when app.py starts
(chalicelib/ops/secrets.py), not resolved into their configuration (tests/test_infra.py)."""

import importlib
import json

import boto3
import pytest
from moto import mock_aws

from chalicelib.config import Settings, get_settings
from chalicelib.ops import secrets

SETTINGS = {"DATABASE_URL": "sqlite:////tmp/from-secret.db", "TURSO_AUTH_TOKEN": "none", "AUTH_KEYS": "k" * 48}


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in (*SETTINGS, "APP_SECRET_ARN"):  # restored after the test, whatever load_into_environment sets
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with mock_aws():
        yield boto3.client("secretsmanager")
    get_settings.cache_clear()  # settings the secret filled in: not for the next tests


def test_the_secret_fills_the_environment_and_a_variable_already_set_wins(aws, monkeypatch):
    arn = aws.create_secret(Name="agent-mail-dev/settings", SecretString=json.dumps(SETTINGS))["ARN"]
    monkeypatch.setenv("APP_SECRET_ARN", arn)
    monkeypatch.setenv("TURSO_AUTH_TOKEN", "set-by-hand")
    assert secrets.load_into_environment() == ["DATABASE_URL", "AUTH_KEYS"]
    settings = Settings(_env_file=None)
    assert (settings.database_url, settings.turso_auth_token, settings.auth_bearer_tokens) == (
        "sqlite:////tmp/from-secret.db", "set-by-hand", ["k" * 48])


def test_without_a_secret_nothing_is_read(aws):
    assert secrets.load_into_environment() == []


@pytest.mark.parametrize("value", ["not json", "[]", '{"DATABASE_URL": 5}', '{"lower": "x"}', '{"A B": "x"}'])
def test_a_secret_that_is_no_object_of_settings_stops_the_start_with_what_to_put(aws, value):
    arn = aws.create_secret(Name="agent-mail-dev/settings", SecretString=value)["ARN"]
    with pytest.raises(secrets.SecretError, match="DATABASE_URL"):
        secrets.load_into_environment(arn)


def test_app_reads_the_secret_before_its_settings(aws, monkeypatch, tmp_path):
    get_settings()  # cached before: the secret's values still reach the app
    database = tmp_path / "from-secret.db"
    arn = aws.create_secret(Name="agent-mail-dev/settings",
                            SecretString=json.dumps(SETTINGS | {"DATABASE_URL": f"sqlite:///{database}"}))["ARN"]
    monkeypatch.setenv("APP_SECRET_ARN", arn)
    importlib.reload(importlib.import_module("app"))
    assert database.exists()  # create_app migrated the secret's database
