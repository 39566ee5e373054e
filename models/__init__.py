"""Model manifest (installed as edge_agent.resources.models)."""
