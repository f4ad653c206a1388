"""Persistence: the SQLite database (migrations, settings, generated secrets) and Redis adapter."""
