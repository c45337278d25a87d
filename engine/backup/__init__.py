"""Backups of the store, taken while the engine runs: SQLite through its online backup API,
PostgreSQL through ``pg_dump``; optionally encrypted with the keys of encryption at rest; checked
by ``backup verify``; restored onto a fresh place by ``restore``."""
