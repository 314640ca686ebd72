"""Identity, roles and secrets through a real apiserver process (SQLite and PostgreSQL).

Every rule of the contract's "Identity, roles and secrets" section: node credentials issued at
registration, node-scoped authorization on every node route, the viewer role, token lists,
credential reset, secrets masked everywhere and revealed only to an admin (audited).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServerFactory
from tests.support.server import ServerProcess

ADMIN = "admin-token-old"
ADMIN_NEW = "admin-token-new"
VIEWER = "viewer-token"
JOIN = "join-token"
TOKENS = {"ADMIN_TOKEN": f"{ADMIN},{ADMIN_NEW}", "VIEWER_TOKEN": VIEWER, "NODE_JOIN_TOKEN": JOIN}
PASSWORD = "pr0xy-pa55word"
API_KEY = "sk-live-0123456789"


@dataclass
class Fleet:
    server: ServerProcess
    admin: httpx.Client
    viewer: httpx.Client

    def client(self, token: str | None) -> httpx.Client:
        return self.server.client(token=token or "")

    def register(self, node_id: str) -> str:
        """Register a node with the join token; its node token."""
        with self.client(JOIN) as joining:
            reply = joining.post("/api/v1/nodes/heartbeat", json=heartbeat(node_id))
        assert reply.status_code == 200, reply.text
        token = reply.json()["node_token"]
        assert isinstance(token, str)
        assert len(token) > 20
        return str(token)

    def place_run(self, node_id: str, node_token: str, **body: Any) -> str:
        """A run placed on `node_id` (its only node with that label); the run id."""
        created = self.admin.post(
            "/api/v1/runs",
            json={"image": "img", "command": ["true"], "node_selector": {"id": node_id}, **body},
        )
        assert created.status_code == 201, created.text
        run_id = str(created.json()["id"])
        with self.client(node_token) as node:
            for _ in range(50):
                work = node.get(f"/api/v1/nodes/{node_id}/work", params={"wait": 2}).json()
                if any(a["run"]["id"] == run_id for a in work["assignments"]):
                    return run_id
        raise AssertionError(f"run {run_id} never reached node {node_id}")


def heartbeat(node_id: str) -> dict[str, Any]:
    return {"node_id": node_id, "labels": {"id": node_id}, "capacity": {"max_concurrent": 2}}


@pytest.fixture
def fleet(apiserver: ApiServerFactory) -> Iterator[Fleet]:
    server = apiserver({**TOKENS, "NODE_HEARTBEAT_INTERVAL": "5", "NODE_OFFLINE_AFTER": "60"})
    with server.client(token=ADMIN) as admin, server.client(token=VIEWER) as viewer:
        yield Fleet(server, admin, viewer)


def test_registration_answers_a_node_token_once_and_the_join_token_cannot_take_over(fleet: Fleet) -> None:
    token = fleet.register("n1")
    with fleet.client(token) as node, fleet.client(JOIN) as joining:
        again = node.post("/api/v1/nodes/heartbeat", json=heartbeat("n1"))
        assert again.status_code == 200
        assert "node_token" not in again.json()  # only the registering answer carries it
        takeover = joining.post("/api/v1/nodes/heartbeat", json=heartbeat("n1"))
        assert takeover.status_code == 409
        assert "nodectl nodes reset-credential n1" in takeover.json()["detail"]
    actions = [
        e["action"] for e in fleet.admin.get("/api/v1/audit", params={"target_id": "n1"}).json()["items"]
    ]
    assert "node.register" in actions


def test_a_node_token_acts_only_for_its_own_node(fleet: Fleet) -> None:
    token_1, token_2 = fleet.register("n1"), fleet.register("n2")
    run_2 = fleet.place_run("n2", token_2)
    with fleet.client(token_1) as intruder:
        forbidden = {
            "heartbeat as n2": intruder.post("/api/v1/nodes/heartbeat", json=heartbeat("n2")),
            "n2's work": intruder.get("/api/v1/nodes/n2/work", params={"wait": 0}),
            "n2's command": intruder.post("/api/v1/nodes/n2/commands/cmd-x/result", json={"ok": True}),
            "n2's run events": intruder.post(
                f"/api/v1/runs/{run_2}/node-events",
                json={
                    "node_id": "n2",
                    "events": [{"node_seq": 1, "type": "exited", "data": {"exit_code": 0}}],
                },
            ),
            "n2's run, naming itself": intruder.post(
                f"/api/v1/runs/{run_2}/node-events",
                json={"node_id": "n1", "events": [{"node_seq": 1, "type": "claimed", "data": {}}]},
            ),
            "the node list": intruder.get("/api/v1/nodes"),
            "n2's env config": intruder.get("/api/v1/nodes/n2/env-config"),
            "a new run": intruder.post("/api/v1/runs", json={"image": "x"}),
            "the audit log": intruder.get("/api/v1/audit"),
        }
        for what, response in forbidden.items():
            assert response.status_code == 403, (what, response.text)
        assert intruder.get("/api/v1/nodes/n1/work", params={"wait": 0}).status_code == 200
    assert fleet.admin.get(f"/api/v1/runs/{run_2}").json()["status"] == "scheduled"  # nothing changed


def test_admin_viewer_and_join_tokens_are_not_node_credentials(fleet: Fleet) -> None:
    fleet.register("n1")
    for token in (ADMIN, VIEWER, JOIN):
        with fleet.client(token) as caller:
            assert caller.get("/api/v1/nodes/n1/work", params={"wait": 0}).status_code == 403
            events = caller.post("/api/v1/runs/run-0000/node-events", json={"node_id": "n1", "events": []})
            assert events.status_code == 403
    for token in (ADMIN, VIEWER):
        with fleet.client(token) as caller:
            assert caller.post("/api/v1/nodes/heartbeat", json=heartbeat("n1")).status_code == 403


def test_a_viewer_reads_everything_and_changes_nothing(fleet: Fleet) -> None:
    token = fleet.register("n1")
    run_id = fleet.place_run("n1", token)
    reads = [
        "/api/v1/nodes",
        "/api/v1/nodes/n1",
        "/api/v1/nodes/n1/runs",
        "/api/v1/nodes/n1/env-config",
        "/api/v1/runs",
        f"/api/v1/runs/{run_id}",
        f"/api/v1/runs/{run_id}/events",
        "/api/v1/audit",
        "/api/v1/auth/session",
    ]
    for path in reads:
        assert fleet.viewer.get(path).status_code == 200, path
    assert fleet.viewer.get("/api/v1/auth/session").json()["role"] == "viewer"
    changes = [
        ("PATCH", "/api/v1/nodes/n1", {"status": "draining"}),
        ("PUT", "/api/v1/nodes/n1/env-config", {"env": {"A": "1"}}),
        ("POST", "/api/v1/nodes/n1/env-config/test-proxy", {}),
        ("POST", "/api/v1/runs", {"image": "x"}),
        ("POST", f"/api/v1/runs/{run_id}/cancel", None),
        ("DELETE", "/api/v1/nodes/n1/credential", None),
        ("DELETE", "/api/v1/nodes/n1", None),
    ]
    for method, path, body in changes:
        response = fleet.viewer.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert "viewer" in response.json()["detail"]
    assert fleet.viewer.get("/api/v1/nodes/n1/env-config", params={"reveal": "true"}).status_code == 403
    node = fleet.admin.get("/api/v1/nodes/n1").json()
    assert (node["draining"], fleet.admin.get(f"/api/v1/runs/{run_id}").json()["cancel_requested"]) == (
        False,
        False,
    )


def test_every_listed_token_works_so_tokens_rotate_without_downtime(fleet: Fleet) -> None:
    for token in (ADMIN, ADMIN_NEW):
        with fleet.client(token) as admin:
            assert admin.get("/api/v1/nodes").status_code == 200
            assert admin.post("/api/v1/runs", json={"image": "x"}).status_code == 201
    with fleet.client("admin-token-unknown") as stranger:
        assert stranger.get("/api/v1/nodes").status_code == 401


def test_reset_credential_voids_the_token_and_the_join_token_registers_the_node_again(fleet: Fleet) -> None:
    old = fleet.register("n1")
    assert fleet.admin.delete("/api/v1/nodes/n1/credential").status_code == 204
    assert fleet.admin.delete("/api/v1/nodes/ghost/credential").status_code == 404
    with fleet.client(old) as stale:
        assert stale.post("/api/v1/nodes/heartbeat", json=heartbeat("n1")).status_code == 401
    new = fleet.register("n1")
    assert new != old
    with fleet.client(new) as node:
        assert node.get("/api/v1/nodes/n1/work", params={"wait": 0}).status_code == 200
    actions = [
        e["action"] for e in fleet.admin.get("/api/v1/audit", params={"target_id": "n1"}).json()["items"]
    ]
    assert {"node.reset_credential", "node.claim_credential"} <= set(actions)


def test_a_deleted_node_registers_again(fleet: Fleet) -> None:
    old = fleet.register("n1")
    assert fleet.admin.delete("/api/v1/nodes/n1").status_code == 204
    with fleet.client(old) as stale:
        assert stale.post("/api/v1/nodes/heartbeat", json=heartbeat("n1")).status_code == 401
    assert fleet.register("n1") != old


def test_nodes_from_before_credentials_claim_one_on_first_use(apiserver: ApiServerFactory) -> None:
    """A node registered while the server ran without tokens has no credential; once tokens are
    set its first heartbeat with the join token gives it one (trust on first use)."""
    open_server = apiserver()
    with open_server.client() as client:
        assert client.post("/api/v1/nodes/heartbeat", json=heartbeat("legacy")).status_code == 200
    open_server.stop()
    guarded = apiserver(TOKENS)  # same database
    with guarded.client(token=JOIN) as joining:
        claimed = joining.post("/api/v1/nodes/heartbeat", json=heartbeat("legacy"))
        assert claimed.status_code == 200
        assert claimed.json()["node_token"]
        assert joining.post("/api/v1/nodes/heartbeat", json=heartbeat("legacy")).status_code == 409


def test_secrets_are_masked_everywhere_and_revealed_only_to_an_admin(fleet: Fleet) -> None:
    token = fleet.register("n1")
    config = {
        "proxy": {"http_proxy": f"http://alice:{PASSWORD}@127.0.0.1:3128", "no_proxy": "localhost"},
        "env": {"MODE": "fast"},
        "secret_env": {"NODE_SECRET": API_KEY},
    }
    saved = fleet.admin.put("/api/v1/nodes/n1/env-config", json=config)
    assert saved.status_code == 200, saved.text
    run_id = fleet.place_run("n1", token, secret_env={"RUN_KEY": API_KEY}, env={"PLAIN": "shown"})

    masked_reads = [
        fleet.admin.get("/api/v1/nodes/n1/env-config"),
        fleet.viewer.get("/api/v1/nodes/n1/env-config"),
        fleet.admin.get(f"/api/v1/runs/{run_id}"),
        fleet.admin.get("/api/v1/runs"),
        fleet.admin.get(f"/api/v1/runs/{run_id}/events"),
        fleet.admin.get("/api/v1/audit"),
        fleet.viewer.get("/api/v1/nodes/n1"),
    ]
    for response in masked_reads:
        assert response.status_code == 200
        assert PASSWORD not in response.text, response.request.url
        assert API_KEY not in response.text, response.request.url
    env_config = masked_reads[0].json()
    assert env_config["proxy"]["http_proxy"] == "http://alice:***@127.0.0.1:3128"
    assert (env_config["env"], env_config["secret_env"]) == ({"MODE": "fast"}, {"NODE_SECRET": "***"})
    run = masked_reads[2].json()
    assert (run["env"], run["secret_env"]) == ({"PLAIN": "shown"}, {"RUN_KEY": "***"})

    revealed = fleet.admin.get("/api/v1/nodes/n1/env-config", params={"reveal": "true"}).json()
    assert revealed["proxy"]["http_proxy"] == config["proxy"]["http_proxy"]
    assert revealed["secret_env"] == {"NODE_SECRET": API_KEY}
    reveals = fleet.admin.get("/api/v1/audit", params={"action": "env_config.reveal"}).json()["items"]
    assert [(e["actor"], e["target_id"]) for e in reveals] == [("admin", "n1")]

    with fleet.client(token) as node:  # the node itself gets them in clear, over its own channel
        work = node.get("/api/v1/nodes/n1/work", params={"wait": 0}).json()
    (assignment,) = work["assignments"]
    assert assignment["run"]["secret_env"] == {"RUN_KEY": API_KEY}
    assert assignment["env_config"]["secret_env"] == {"NODE_SECRET": API_KEY}
    assert assignment["env_config"]["proxy"]["http_proxy"] == config["proxy"]["http_proxy"]


def test_sending_the_mask_back_keeps_the_stored_secret(fleet: Fleet) -> None:
    fleet.register("n1")
    config = {
        "proxy": {"http_proxy": f"http://alice:{PASSWORD}@127.0.0.1:3128"},
        "secret_env": {"KEEP": API_KEY, "CHANGE": "old"},
    }
    assert fleet.admin.put("/api/v1/nodes/n1/env-config", json=config).status_code == 200
    read_back = fleet.admin.get("/api/v1/nodes/n1/env-config").json()
    read_back["secret_env"]["CHANGE"] = "new"
    read_back["env"] = {"ADDED": "1"}
    assert fleet.admin.put("/api/v1/nodes/n1/env-config", json=read_back).status_code == 200
    revealed = fleet.admin.get("/api/v1/nodes/n1/env-config", params={"reveal": "true"}).json()
    assert revealed["proxy"]["http_proxy"] == config["proxy"]["http_proxy"]
    assert revealed["secret_env"] == {"KEEP": API_KEY, "CHANGE": "new"}
    assert revealed["env"] == {"ADDED": "1"}
    unknown = fleet.admin.put("/api/v1/nodes/n1/env-config", json={"secret_env": {"NEW": "***"}})
    assert unknown.status_code == 400
    assert "no value is stored" in unknown.json()["detail"]


def test_secrets_are_stored_encrypted_with_a_key_and_the_key_rotates(
    apiserver: ApiServerFactory, database_url: str
) -> None:
    from cryptography.fernet import Fernet

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    server = apiserver({**TOKENS, "SECRETS_KEY": old_key})
    with server.client(token=JOIN) as joining:
        assert joining.post("/api/v1/nodes/heartbeat", json=heartbeat("n1")).status_code == 200
    with server.client(token=ADMIN) as admin:
        body = {"proxy": {"http_proxy": f"http://a:{PASSWORD}@127.0.0.1:1"}, "secret_env": {"K": API_KEY}}
        assert admin.put("/api/v1/nodes/n1/env-config", json=body).status_code == 200
    stored = _stored_env_config(database_url)
    assert PASSWORD not in stored
    assert API_KEY not in stored
    assert "fernet:" in stored
    server.stop()

    rotated = apiserver({**TOKENS, "SECRETS_KEY": f"{new_key},{old_key}"})
    with rotated.client(token=ADMIN) as admin:
        revealed = admin.get("/api/v1/nodes/n1/env-config", params={"reveal": "true"}).json()
        assert revealed["secret_env"] == {"K": API_KEY}
    rotated.stop()

    without = apiserver(TOKENS)
    with without.client(token=ADMIN) as admin:
        refused = admin.get("/api/v1/nodes/n1/env-config", params={"reveal": "true"})
        assert refused.status_code == 503
        assert "SECRETS_KEY" in refused.json()["detail"]
    assert "SECRETS_KEY is not set" in without.log()


def test_debug_logs_carry_no_secret(apiserver: ApiServerFactory) -> None:
    server = apiserver({**TOKENS, "LOG_LEVEL": "DEBUG"})
    fleet = Fleet(server, server.client(token=ADMIN), server.client(token=VIEWER))
    token = fleet.register("n1")
    body = {"proxy": {"http_proxy": f"http://a:{PASSWORD}@127.0.0.1:1"}, "secret_env": {"K": API_KEY}}
    assert fleet.admin.put("/api/v1/nodes/n1/env-config", json=body).status_code == 200
    fleet.place_run("n1", token, secret_env={"RUN_KEY": API_KEY})
    fleet.admin.close()
    fleet.viewer.close()
    log = server.log()
    assert "debug" in log.lower()  # the level took effect (JSON lines spell it in lower case)
    assert PASSWORD not in log
    assert API_KEY not in log
    assert token not in log


def _stored_env_config(database_url: str) -> str:
    import asyncio

    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import create_async_engine

    from server.config import async_database_url
    from server.db.models import ENV_CONFIGS

    async def read() -> str:
        engine = create_async_engine(async_database_url(database_url))
        try:
            async with engine.connect() as connection:
                rows = (await connection.execute(select(ENV_CONFIGS.c.proxy, ENV_CONFIGS.c.secrets))).all()
        finally:
            await engine.dispose()
        return repr(rows)

    return asyncio.run(read())


def test_a_proxy_test_with_a_masked_password_uses_the_stored_one(fleet: Fleet) -> None:
    token = fleet.register("n1")
    proxy = f"http://alice:{PASSWORD}@127.0.0.1:3128"
    assert (
        fleet.admin.put("/api/v1/nodes/n1/env-config", json={"proxy": {"http_proxy": proxy}}).status_code
        == 200
    )
    masked = fleet.admin.get("/api/v1/nodes/n1/env-config").json()["proxy"]
    received: list[dict[str, Any]] = []

    def answer() -> None:
        with fleet.client(token) as node:
            for _ in range(20):
                commands = node.get("/api/v1/nodes/n1/work", params={"wait": 1}).json()["commands"]
                if commands:
                    received.append(commands[0]["payload"])
                    result = {"ok": True, "result": {"ok": True, "reason": "ok", "message": "fine"}}
                    node.post(f"/api/v1/nodes/n1/commands/{commands[0]['id']}/result", json=result)
                    return

    answering = threading.Thread(target=answer)
    answering.start()
    body = {"proxy": {**masked, "no_proxy": "edited.example"}, "urls": ["http://127.0.0.1:9/"]}
    tested = fleet.admin.post("/api/v1/nodes/n1/env-config/test-proxy", json=body, params={"wait": 15})
    answering.join(timeout=20)
    assert tested.status_code == 200, tested.text
    assert received[0]["proxy"]["http_proxy"] == proxy  # the node got the stored password, not ***
    assert received[0]["proxy"]["no_proxy"] == "edited.example"


def test_session_endpoints_without_a_valid_session(fleet: Fleet) -> None:
    with fleet.client(None) as anonymous:
        assert anonymous.get("/api/v1/auth/session").status_code == 401
        anonymous.cookies.set("agentnodes_session", "forged.value")
        assert anonymous.get("/api/v1/auth/session").status_code == 401
        logout = anonymous.post("/api/v1/auth/logout")
        assert logout.status_code == 204  # an invalid session is simply cleared
        assert "agentnodes_session=" in logout.headers["set-cookie"]
        assert "Max-Age=0" in logout.headers["set-cookie"]
        login = anonymous.post("/api/v1/auth/login", json={"token": VIEWER})
        assert login.status_code == 200
        cookie = login.headers["set-cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=Strict"):
            assert attribute.lower() in cookie.lower()
        assert anonymous.post("/api/v1/auth/login", json={"token": JOIN}).status_code == 403
        assert anonymous.post("/api/v1/auth/login", json={"token": "nope-nope"}).status_code == 401
