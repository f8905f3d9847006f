from alembic import context
from sqlalchemy import create_engine

from service.models import Base

url: str | None = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")


def run() -> None:
    if not url:
        raise RuntimeError("no database url: pass it as the `url` attribute or set sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
