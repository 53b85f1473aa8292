import pytest

FAKE_TOKEN = "test-token-not-real"


@pytest.fixture
def client_config():
    return {"api_key": "dummy", "password": "password", "secret": "xxxxxxxx"}


def test_login_rejects_placeholder(client_config):
    assert client_config["password"] == "password"
