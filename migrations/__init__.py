"""gradtrace's Alembic migrations (installed as ``gradtrace_migrations``)."""
