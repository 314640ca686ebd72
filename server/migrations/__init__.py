"""Alembic migrations of the apiserver schema; `run_migrations()` upgrades to head at start-up
and in `apiserver migrate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent
# arbitrary constant: serialises concurrent start-ups of several replicas on PostgreSQL
PG_MIGRATION_LOCK_ID = 727_172_001


class SchemaNewerThanCode(RuntimeError):
    """The database was migrated by a newer apiserver: this one does not know its revision."""

    def __init__(self, revision: str, head: str) -> None:
        super().__init__(
            f"the database is at schema revision {revision}, which this apiserver does not know "
            f"(its newest is {head}): a newer version migrated it. Run that version, or restore the "
            "backup taken before the upgrade (docs/operations.md, Upgrades)"
        )
        self.revision = revision
        self.head = head


@dataclass(frozen=True)
class MigrationResult:
    before: str | None  # None: an empty database
    after: str


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "server/migrations/versions holds no revision"
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def _upgrade(connection: Connection) -> MigrationResult:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": PG_MIGRATION_LOCK_ID})
    config = alembic_config()
    before = current_revision(connection)
    if before is not None and not _known(before):
        raise SchemaNewerThanCode(before, head_revision())
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    return MigrationResult(before, current_revision(connection) or head_revision())


async def run_migrations(engine: AsyncEngine) -> MigrationResult:
    """Upgrade the database to the newest revision (idempotent; safe with several replicas)."""
    async with engine.begin() as connection:
        return await connection.run_sync(_upgrade)
