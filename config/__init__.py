"""Shipped config templates, emission factors and field templates (installed as edge_agent.resources.config)."""
