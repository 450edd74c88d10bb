"""Settings refuse weak secrets outside development and wildcard CORS."""

import pytest
from pydantic import SecretStr, ValidationError

from depthflow.api.config import ApiSettings, SecuritySettings

STRONG_KEY = "9f2c1e7b4a6d8e0f3b5c7a9d1e2f4a6b8c0d2e4f6a8b"


def test_development_accepts_defaults():
    s = SecuritySettings(environment="development")
    assert s.app_username == "admin"
    assert "depthflow" not in repr(s)  # secrets are hidden in repr


@pytest.mark.parametrize("environment", ["test", "production"])
@pytest.mark.parametrize(
    ("key", "password"),
    [
        (None, "Str0ng-password-xyz"),  # default secret key
        ("changeme", "Str0ng-password-xyz"),
        ("short-key", "Str0ng-password-xyz"),
        ("your-secret-key-here-0123456789abcdefghij", "Str0ng-password-xyz"),
        (STRONG_KEY, None),  # default password
        (STRONG_KEY, "admin123"),
        (STRONG_KEY, "short"),
        (STRONG_KEY, "admin-is-my-password"),  # contains the user name
    ],
)
def test_weak_secrets_refused_outside_development(environment, key, password):
    kwargs = {"environment": environment}
    if key is not None:
        kwargs["secret_key"] = SecretStr(key)
    if password is not None:
        kwargs["app_password"] = SecretStr(password)
    with pytest.raises(ValidationError) as info:
        SecuritySettings(**kwargs)
    assert (key or "") not in str(info.value) or key is None
    assert (password or "@@") not in str(info.value)


def test_strong_secrets_accepted_in_production():
    s = SecuritySettings(
        environment="production",
        secret_key=SecretStr(STRONG_KEY),
        app_password=SecretStr("Str0ng-password-xyz"),
        trading_pairs="btcusdt, ethusdt",
    )
    assert s.trading_pairs == ("BTCUSDT", "ETHUSDT")


def test_cors_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("API_CORS_ORIGINS", "https://a.example,https://b.example")
    assert ApiSettings().cors_origins == ("https://a.example", "https://b.example")
    with pytest.raises(ValidationError):
        ApiSettings(cors_origins="*")


def test_unknown_fields_refused():
    with pytest.raises(ValidationError):
        ApiSettings(not_a_setting=1)
