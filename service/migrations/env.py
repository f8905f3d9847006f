from alembic import context
from sqlalchemy import create_engine, text

from service.models import Base

url: str | None = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")


def run() -> None:
    if not url:
        raise RuntimeError("no database url: pass it as the `url` attribute or set sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Replicas starting together migrate one at a time: the others wait here, then find the schema
                # at head (the lock is released when this transaction commits).
                connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('pipeline-service migrations'))"))
            context.run_migrations()
    engine.dispose()


run()
