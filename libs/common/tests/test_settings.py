import pytest
from pydantic import SecretStr, ValidationError

from depthflow.common.errors import ConfigError
from depthflow.common.settings import KafkaSettings, PostgresSettings, load_settings


def test_defaults_are_the_local_ones():
    kafka = KafkaSettings()
    pg = PostgresSettings()
    assert kafka.bootstrap_servers == "127.0.0.1:9092"
    assert pg.dsn.get_secret_value() == "postgresql://depthflow:depthflow@127.0.0.1:5432/depthflow"


def test_settings_are_frozen():
    kafka = KafkaSettings()
    with pytest.raises(ValidationError):
        kafka.bootstrap_servers = "elsewhere:1"  # type: ignore[misc]


def test_unknown_fields_are_refused():
    with pytest.raises(ValidationError, match="extra"):
        KafkaSettings(bootstrap_server="typo:9092")  # type: ignore[call-arg]


def test_secrets_never_show_in_repr():
    pg = PostgresSettings(dsn=SecretStr("postgresql://u:hunter2@db:5432/x"))
    kafka = KafkaSettings(sasl_password=SecretStr("hunter2"))
    assert "hunter2" not in repr(pg) + str(pg) + repr(kafka) + str(kafka)


def test_wrong_env_setting_names_the_field_and_variable(monkeypatch):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "no-port-here")
    with pytest.raises(ConfigError) as err:
        load_settings(KafkaSettings)
    assert "bootstrap_servers" in str(err.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(err.value)


def test_bad_dsn_error_does_not_echo_the_secret(monkeypatch):
    monkeypatch.setenv("POSTGRES_DSN", "mysql://root:topsecret@db/x")
    with pytest.raises(ConfigError) as err:
        load_settings(PostgresSettings)
    assert "dsn" in str(err.value)
    assert "topsecret" not in str(err.value)


def test_out_of_range_number_is_refused(monkeypatch):
    monkeypatch.setenv("POSTGRES_POOL_MAX_SIZE", "0")
    with pytest.raises(ConfigError, match="pool_max_size"):
        load_settings(PostgresSettings)


def test_sasl_config_reaches_both_clients():
    kafka = KafkaSettings(
        bootstrap_servers="a:1,b:2",
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password=SecretStr("p"),
    )
    assert kafka.confluent_config()["sasl.password"] == "p"
    assert kafka.aiokafka_config()["sasl_plain_password"] == "p"
