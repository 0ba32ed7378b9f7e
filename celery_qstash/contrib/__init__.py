"""Integrations with other frameworks (each needs that framework installed)."""
