"""Shared test set-up: the session lab (tests/integration/lab_fixture.py) as a plugin, so its
fixture and its test-ordering hook apply to every module."""

pytest_plugins = ["tests.integration.lab_fixture"]
