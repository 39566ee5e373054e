"""The one exception tree of edge-agent; messages say what, where, expected and got."""

from __future__ import annotations


class EdgeAgentError(Exception):
    """Base of every error edge-agent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A configuration file or value is wrong; `problems` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class LedgerError(EdgeAgentError):
    """The outbox or the chain cannot do what was asked (corrupt, closed, full)."""


class SyncError(EdgeAgentError):
    """The MQTT link cannot be set up as configured (bad URL, CA, certificate)."""


class KeyError_(EdgeAgentError):
    """A key file is missing, unreadable, has loose permissions or is malformed."""
