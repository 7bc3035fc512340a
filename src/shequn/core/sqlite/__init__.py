"""The embedded database: Django's SQLite backend with a write lock that is taken promptly (base.py)."""
