"""The edge-agent test suite (a package so conftest can import tests.broker_fixtures)."""
