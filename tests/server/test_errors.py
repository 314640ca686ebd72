"""The one place that maps errors to HTTP: a database in crash recovery is 503, not 500."""

from __future__ import annotations

from typing import Any

from asyncpg.exceptions import CannotConnectNowError  # type: ignore[import-untyped]
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from server.errors import EXCEPTION_HANDLERS, is_database_unavailable


def _status(exc: Exception) -> int:
    handler: Any = EXCEPTION_HANDLERS[SQLAlchemyError]
    return int(handler(None, exc).status_code)


def test_postgres_recovering_from_a_crash_answers_503() -> None:
    recovering = CannotConnectNowError("the database system is in recovery mode")
    wrapped = DBAPIError("SELECT 1", {}, recovering)
    assert is_database_unavailable(wrapped)
    assert _status(wrapped) == 503


def test_a_real_bug_stays_a_500() -> None:
    bug = IntegrityError("INSERT ...", {}, Exception("duplicate key value violates unique constraint"))
    assert not is_database_unavailable(bug)
    assert _status(bug) == 500
