"""Unit files shipped with the package (systemd/ in the repository, edge_agent.resources.systemd when installed)."""
