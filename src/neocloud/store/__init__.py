"""Persistence: SQLAlchemy tables, the database behind them, and their Alembic migrations."""
