"""Integrations with web frameworks (each imported only when used)."""
