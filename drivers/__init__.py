"""Hardware drivers and their wire-protocol twins, installed as edge_agent.drivers."""
