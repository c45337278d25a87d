"""The store's schema migrations (alembic), one file a revision under ``versions/``."""

HEAD = "0017"
"""The newest revision: a store already there opens without loading alembic (a test holds it
equal to the scripts' head; a new migration moves it)."""
