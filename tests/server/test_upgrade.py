"""Upgrades: `apiserver check-config` and `apiserver migrate` on their own, and a database written
at the previous schema revision (0005) migrated and read back through the API
(docs/operations.md, Upgrades)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, text
from sqlalchemy.ext.asyncio import create_async_engine

from server.config import async_database_url
from server.migrations import alembic_config, head_revision
from tests.support.server import REPO_ROOT, ServerProcess

PREVIOUS = "0007"
TOKENS = {"ADMIN_TOKEN": "admin-token-123", "NODE_JOIN_TOKEN": "join-token-123"}
SEEDED_AT = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def apiserver(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# ---------------------------------------------------------------------------------------- check-config


def test_check_config_accepts_valid_settings(tmp_path: Path) -> None:
    done = apiserver("check-config", env={"APISERVER_DATA_DIR": str(tmp_path), **TOKENS}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("apiserver: configuration valid (http://127.0.0.1:8080, database ")
    assert not (tmp_path / "apiserver.db").exists()  # it opens nothing


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"APISERVER_PORT": "70000"}, "APISERVER_PORT"),
        ({"DATABASE_URL": "mysql://db/nodes"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://redis:6379"}, "REDIS_URL"),
        ({"NODE_HEARTBEAT_INTERVAL": "120"}, "NODE_OFFLINE_AFTER"),
        ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
        ({"TLS_CERT_FILE": "/nonexistent.pem"}, "TLS_CERT_FILE"),
        ({"LOG_LEVEL": "chatty"}, "LOG_LEVEL"),
        ({"APISERVER_HOST": "0.0.0.0", "ADMIN_TOKEN": "", "NODE_JOIN_TOKEN": ""}, "ADMIN_TOKEN"),
    ],
)
def test_check_config_exits_2_naming_the_bad_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    done = apiserver("check-config", env={**TOKENS, **env}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("apiserver: configuration error: ")
    assert variable in done.stderr
    assert "Traceback" not in done.stderr


def test_check_config_takes_the_listen_flags(tmp_path: Path) -> None:
    done = apiserver("check-config", "--host", "0.0.0.0", env={}, cwd=tmp_path)  # protected mode
    assert done.returncode == 2
    assert "refusing to listen on '0.0.0.0' in protected mode" in done.stderr


# ---------------------------------------------------------------------------------------- migrate


def test_the_seeded_revision_is_the_one_before_head() -> None:
    """A new migration makes this fail: seed the database as the revision before it writes it."""
    head = ScriptDirectory.from_config(alembic_config()).get_revision(head_revision())
    assert head is not None
    assert head.down_revision == PREVIOUS, f"update PREVIOUS and _seed to revision {head.down_revision}"


def _seed(connection: Connection) -> None:
    """What an apiserver at revision 0007 stored: a node with env config, a finished run with its
    events, a queued run and an audit entry (rows as that schema has them; the columns 0006 added
    take their defaults)."""
    tables = MetaData()
    tables.reflect(connection)
    assert "sandbox" in tables.tables["runs"].c  # 0006's columns are there
    assert "ix_runs_finished_at" in {index.name for index in tables.tables["runs"].indexes}  # 0007's
    assert "report_digest" not in tables.tables["nodes"].c  # 0008's
    at = SEEDED_AT
    connection.execute(
        tables.tables["nodes"].insert(),
        {
            "id": "old-node",
            "reported_labels": {"zone": "a"},
            "label_overrides": {"tier": "gold"},
            "labels": {"zone": "a", "tier": "gold"},
            "max_concurrent": 4,
            "running": 0,
            "draining": False,
            "info": {"hostname": "old-host"},
            "last_heartbeat_at": at,
            "created_at": at,
            "resource_version": 3,
        },
    )
    connection.execute(
        tables.tables["env_configs"].insert(),
        {
            "node_id": "old-node",
            "proxy": {},
            "env": {"REGION": "eu"},
            "resource_version": 2,
            "updated_at": at,
        },
    )
    runs = tables.tables["runs"]
    common = {
        "image": "agentnodes/busybox",
        "env": {"GREETING": "hi"},
        "node_selector": {},
        "selector_expressions": [],
        "attempts": 1,
        "cancel_requested": False,
        "last_node_seq": 0,
        "enqueued": True,
        "node_id": None,
        "exit_code": None,
        "scheduled_at": None,
        "started_at": None,
        "finished_at": None,
    }
    connection.execute(
        runs.insert(),
        [
            {
                **common,
                "id": "run-done",
                "status": "succeeded",
                "command": ["echo", "hello"],
                "node_id": "old-node",
                "exit_code": 0,
                "created_at": at,
                "scheduled_at": at,
                "started_at": at + timedelta(seconds=1),
                "finished_at": at + timedelta(seconds=2),
                "last_event_seq": 3,
            },
            {
                **common,
                "id": "run-queued",
                "status": "queued",
                "command": ["sleep", "1"],
                "node_selector": {"zone": "nowhere"},
                "attempts": 0,
                "created_at": at,
                "last_event_seq": 1,
            },
        ],
    )
    connection.execute(
        tables.tables["run_events"].insert(),
        [
            {"run_id": "run-done", "seq": 1, "type": "queued", "at": at, "data": {}},
            {
                "run_id": "run-done",
                "seq": 2,
                "type": "log",
                "at": at,
                "data": {"stream": "stdout", "line": "hello"},
            },
            {"run_id": "run-done", "seq": 3, "type": "exited", "at": at, "data": {"exit_code": 0}},
            {"run_id": "run-queued", "seq": 1, "type": "queued", "at": at, "data": {}},
        ],
    )
    connection.execute(
        tables.tables["audit_log"].insert(),
        {
            "at": at,
            "actor": "admin",
            "action": "node.label",
            "target_type": "node",
            "target_id": "old-node",
            "details": {"labels": {"tier": "gold"}},
        },
    )


async def _database_at_previous_revision(database_url: str) -> None:
    url = async_database_url(database_url)
    await asyncio.to_thread(command.upgrade, alembic_config(url), PREVIOUS)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_seed)
    finally:
        await engine.dispose()


async def _revision(database_url: str) -> str:
    engine = create_async_engine(async_database_url(database_url))
    try:
        async with engine.connect() as connection:
            return str((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar())
    finally:
        await engine.dispose()


def test_migrate_upgrades_a_database_of_the_previous_revision(database_url: str, tmp_path: Path) -> None:
    asyncio.run(_database_at_previous_revision(database_url))
    env = {"DATABASE_URL": database_url}

    first = apiserver("migrate", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.endswith(f"from {PREVIOUS} to {head_revision()}\n")
    assert asyncio.run(_revision(database_url)) == head_revision()
    again = apiserver("migrate", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.endswith(f"is at schema revision {head_revision()}; nothing to do\n")

    # the seeded rows are a month old: retention must not collect them before they are read back
    keep = {"RUN_RETENTION": "315360000", "AUDIT_RETENTION": "315360000"}
    with ServerProcess(env={**env, **TOKENS, **keep}, data_dir=tmp_path) as server, server.client() as client:
        node = client.get("/api/v1/nodes/old-node").json()
        assert node["labels"] == {"zone": "a", "tier": "gold"}
        # its last heartbeat is a month old: for one NODE_OFFLINE_AFTER after the start the
        # restart hold keeps it as the newest stored time left it (online), but it takes no run
        # until it is heard again (server.services.liveness)
        assert node["status"] == "online"
        assert node["schedulable"] is False
        assert node["capacity"]["max_concurrent"] == 4
        assert client.get("/api/v1/nodes/old-node/env-config").json()["env"] == {"REGION": "eu"}
        done = client.get("/api/v1/runs/run-done").json()
        assert (done["status"], done["exit_code"], done["command"]) == ("succeeded", 0, ["echo", "hello"])
        assert done["env"] == {"GREETING": "hi"}
        events = client.get("/api/v1/runs/run-done/events").json()["items"]
        assert [(event["seq"], event["type"]) for event in events] == [
            (1, "queued"),
            (2, "log"),
            (3, "exited"),
        ]
        assert events[1]["data"]["line"] == "hello"
        assert client.get("/api/v1/runs/run-queued").json()["status"] == "queued"
        audit = client.get("/api/v1/audit", params={"target_id": "old-node"}).json()["items"]
        assert [entry["action"] for entry in audit] == ["node.label"]


def test_a_database_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'apiserver.db'}"
    env = {"DATABASE_URL": database_url}
    assert apiserver("migrate", env=env, cwd=tmp_path).returncode == 0

    async def from_the_future() -> None:
        engine = create_async_engine(async_database_url(database_url))
        async with engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
        await engine.dispose()

    asyncio.run(from_the_future())
    done = apiserver("migrate", env=env, cwd=tmp_path)
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"the database is at schema revision 9999, which this apiserver does not know (its newest is "
            f"{head_revision()}): a newer version migrated it. Run that version, or restore the backup taken "
            "before the upgrade (docs/operations.md, Upgrades)"
        )
    )


def test_migrate_of_an_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = apiserver(
        "migrate", env={"DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:9/nodes"}, cwd=tmp_path
    )
    assert done.returncode == 1
    assert done.stderr.startswith(
        "apiserver: migrating postgresql+asyncpg://nobody:***@127.0.0.1:9/nodes failed: "
    )
    assert done.stderr.count("\n") == 1
    assert "secret" not in done.stderr
