"""Node registry through a real apiserver process, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServerFactory
from tests.support import db
from tests.support.postgres import PostgresServer
from tests.support.server import ServerProcess
from tests.support.wait import wait_until

ADMIN = "admin-secret"
JOIN = "join-secret"


def beat(client: httpx.Client, node_id: str, labels: dict[str, str] | None = None, cap: int = 2) -> Any:
    body = {"node_id": node_id, "labels": labels or {}, "capacity": {"max_concurrent": cap}}
    response = client.post("/api/v1/nodes/heartbeat", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def wait_status(client: httpx.Client, node_id: str, status: str, timeout: float) -> None:
    wait_until(
        lambda: client.get(f"/api/v1/nodes/{node_id}").json()["status"] == status,
        f"{node_id} {status}",
        timeout,
    )


def test_heartbeat_registers_node(apiserver: ApiServerFactory) -> None:
    server = apiserver({"NODE_HEARTBEAT_INTERVAL": "7", "NODE_OFFLINE_AFTER": "21"})
    with server.client() as client:
        empty = client.get("/api/v1/nodes").json()
        # where the live node stream was when the list was read (GET /api/v1/watch/nodes?since=)
        assert re.fullmatch(r"[0-9a-f]+:0", empty.pop("stream_position"))
        assert empty == {"items": [], "total": 0, "limit": 1000, "offset": 0}
        reply = beat(client, "node-a", {"os": "linux", "arch": "amd64"}, cap=3)
        assert reply == {
            "node_id": "node-a",
            "status": "online",
            "heartbeat_interval": 7.0,
            "offline_after": 21.0,
            "stop_runs": [],
        }
        node = client.get("/api/v1/nodes/node-a").json()
        assert node["status"] == "online"
        assert node["labels"] == {"os": "linux", "arch": "amd64"}
        assert node["capacity"] == {"max_concurrent": 3, "cpus": None, "memory_mb": None}
        assert node["running"] == 0
        assert node["created_at"].endswith("Z")
        assert node["last_heartbeat_at"].endswith("Z")
        first_seen = node["created_at"]
        beat(client, "node-a", {"os": "linux"}, cap=5)
        node = client.get("/api/v1/nodes/node-a").json()
        assert node["labels"] == {"os": "linux"}
        assert node["capacity"] == {"max_concurrent": 5, "cpus": None, "memory_mb": None}
        assert node["created_at"] == first_seen
        assert node["last_heartbeat_at"] > first_seen
        assert client.get("/api/v1/nodes").json()["total"] == 1
        assert client.get("/api/v1/nodes/nope").status_code == 404
        assert client.get("/api/v1/nodes/node-a/runs").json() == {
            "items": [],
            "total": 0,
            "limit": 1000,
            "offset": 0,
        }


def test_list_filters_and_pagination(apiserver: ApiServerFactory) -> None:
    server = apiserver()
    with server.client() as client:
        for i in range(6):
            beat(client, f"n{i}", {"zone": "a" if i < 4 else "b", "gpu": "true" if i % 2 else "false"})
        client.patch("/api/v1/nodes/n0", json={"status": "draining"}).raise_for_status()

        def ids(**params: Any) -> list[str]:
            response = client.get("/api/v1/nodes", params=params)
            assert response.status_code == 200, response.text
            return [n["id"] for n in response.json()["items"]]

        assert ids(selector="zone=a") == ["n0", "n1", "n2", "n3"]
        assert ids(selector="zone=a,gpu=true") == ["n1", "n3"]
        assert ids(selector="zone==b") == ["n4", "n5"]
        assert ids(selector="zone=c") == []
        assert ids(status="draining") == ["n0"]
        assert ids(status="online", selector="zone=a") == ["n1", "n2", "n3"]
        assert ids(status="offline") == []
        page = client.get("/api/v1/nodes", params={"limit": 2, "offset": 3}).json()
        assert [n["id"] for n in page["items"]] == ["n3", "n4"]
        assert (page["total"], page["limit"], page["offset"]) == (6, 2, 3)
        assert client.get("/api/v1/nodes", params={"offset": 100}).json()["items"] == []
        # q: a part of the id, taken literally (no LIKE wildcards), combined with the other filters
        beat(client, "web_1", {"zone": "c"})
        beat(client, "webx1", {"zone": "c"})
        assert ids(q="n") == ["n0", "n1", "n2", "n3", "n4", "n5"]
        assert ids(q="3") == ["n3"]
        assert ids(q="b_") == ["web_1"]
        assert ids(q="%") == []
        assert ids(q="n", selector="zone=b", status="online") == ["n4", "n5"]
        searched = client.get("/api/v1/nodes", params={"q": "n", "limit": 2, "offset": 2}).json()
        assert ([n["id"] for n in searched["items"]], searched["total"]) == (["n2", "n3"], 6)
        for bad in (
            {"q": "x" * 254},
            {"limit": 0},
            {"limit": 10001},
            {"offset": -1},
            {"status": "sleeping"},
            {"selector": "zone"},
            {"selector": "bad key=x"},
            {"limit": "ten"},
        ):
            response = client.get("/api/v1/nodes", params=bad)
            assert response.status_code == 400, (bad, response.text)
            assert response.json()["detail"]


def test_patch_labels_merge_and_stick_across_heartbeats(apiserver: ApiServerFactory) -> None:
    server = apiserver()
    with server.client() as client:
        beat(client, "n1", {"os": "linux", "tier": "spot", "zone": "a"})
        version = client.get("/api/v1/nodes/n1").json()["resource_version"]
        response = client.patch(
            "/api/v1/nodes/n1", json={"labels": {"gpu": "a100", "tier": None, "zone": "b"}}
        )
        assert response.status_code == 200, response.text
        node = response.json()
        assert node["labels"] == {"os": "linux", "gpu": "a100", "zone": "b"}
        assert node["resource_version"] == version + 1
        # the node keeps reporting tier and zone=a: the admin's removal and override win
        beat(client, "n1", {"os": "linux", "tier": "spot", "zone": "a", "new": "x"})
        assert client.get("/api/v1/nodes/n1").json()["labels"] == {
            "os": "linux",
            "gpu": "a100",
            "zone": "b",
            "new": "x",
        }
        assert client.get("/api/v1/nodes", params={"selector": "gpu=a100"}).json()["total"] == 1
        # stale edits are refused, by body field or If-Match header
        stale = client.patch("/api/v1/nodes/n1", json={"labels": {"a": "b"}, "resource_version": version})
        assert stale.status_code == 409
        assert "changed meanwhile" in stale.json()["detail"]
        stale = client.patch(
            "/api/v1/nodes/n1", json={"labels": {"a": "b"}}, headers={"If-Match": f'"{version}"'}
        )
        assert stale.status_code == 409
        current = version + 1
        ok = client.patch("/api/v1/nodes/n1", json={"max_concurrent": 7}, headers={"If-Match": str(current)})
        assert ok.status_code == 200, ok.text
        beat(client, "n1", {"os": "linux"}, cap=2)
        assert client.get("/api/v1/nodes/n1").json()["capacity"] == {
            "max_concurrent": 7,
            "cpus": None,
            "memory_mb": None,
        }
        bad = client.patch("/api/v1/nodes/n1", json={"labels": {"-bad": "x"}})
        assert bad.status_code == 400
        assert "-bad" in bad.json()["detail"]
        assert client.patch("/api/v1/nodes/n1", json={"status": "offline"}).status_code == 400
        assert client.patch("/api/v1/nodes/n1", json={"max_concurrent": 0}).status_code == 400
        assert client.patch("/api/v1/nodes/ghost", json={"status": "draining"}).status_code == 404
        actions = [
            e["action"] for e in client.get("/api/v1/audit", params={"target_id": "n1"}).json()["items"]
        ]
        assert actions.count("node.update") == 2


def test_draining_offline_online_transitions(apiserver: ApiServerFactory) -> None:
    server = apiserver({"NODE_HEARTBEAT_INTERVAL": "0.5", "NODE_OFFLINE_AFTER": "2"})
    with server.client() as client:
        beat(client, "steady")
        beat(client, "drained")
        assert (
            client.patch("/api/v1/nodes/drained", json={"status": "draining"}).json()["status"] == "draining"
        )
        assert beat(client, "drained")["status"] == "draining"
        beat(client, "steady")
        assert client.get("/api/v1/nodes/steady").json()["status"] == "online"
        # how soon after NODE_OFFLINE_AFTER it shows offline is measured by bench/node_channel.py
        wait_status(client, "steady", "offline", timeout=15)
        assert client.get("/api/v1/nodes/drained").json()["status"] == "offline"
        offline = client.get("/api/v1/nodes", params={"status": "offline"}).json()
        assert {n["id"] for n in offline["items"]} == {"steady", "drained"}
        assert beat(client, "steady")["status"] == "online"
        assert beat(client, "drained")["status"] == "draining"  # draining survived being offline
        assert client.get("/api/v1/nodes/drained").json()["draining"] is True
        assert client.patch("/api/v1/nodes/drained", json={"status": "online"}).json()["status"] == "online"
        assert client.get("/api/v1/nodes", params={"status": "online"}).json()["total"] == 2


def test_delete_node(apiserver: ApiServerFactory, database_url: str) -> None:
    server = apiserver()
    with server.client() as client:
        assert client.delete("/api/v1/nodes/ghost").status_code == 404
        beat(client, "busy")
        client.put("/api/v1/nodes/busy/env-config", json={"env": {"A": "1"}}).raise_for_status()
        db.insert_run(database_url, "run-active-1", "busy", "running")
        db.insert_run(database_url, "run-done-1", "busy", "succeeded")
        runs = client.get("/api/v1/nodes/busy/runs").json()
        assert {r["id"] for r in runs["items"]} == {"run-active-1", "run-done-1"}
        assert runs["total"] == 2
        assert client.get("/api/v1/nodes/busy/runs", params={"status": "running"}).json()["total"] == 1
        refused = client.delete("/api/v1/nodes/busy")
        assert refused.status_code == 409
        assert "run-active-1" in refused.json()["detail"]
        assert client.get("/api/v1/nodes/busy").status_code == 200
        db.set_run_status(database_url, "run-active-1", "failed")
        assert client.delete("/api/v1/nodes/busy").status_code == 204
        assert client.get("/api/v1/nodes/busy").status_code == 404
        assert client.get("/api/v1/nodes/busy/env-config").status_code == 404
        beat(client, "busy")  # re-registers with a clean slate
        assert client.get("/api/v1/nodes/busy/env-config").json()["env"] == {}


def test_env_config(apiserver: ApiServerFactory) -> None:
    server = apiserver()
    with server.client() as client:
        assert client.get("/api/v1/nodes/ghost/env-config").status_code == 404
        assert client.put("/api/v1/nodes/ghost/env-config", json={}).status_code == 404
        beat(client, "n1")
        empty = client.get("/api/v1/nodes/n1/env-config").json()
        assert empty["proxy"] == {"http_proxy": None, "https_proxy": None, "no_proxy": None}
        assert empty["env"] == {}
        assert empty["resource_version"] == 0
        first = {"env": {"WHO": "first"}, "resource_version": 0}
        assert client.put("/api/v1/nodes/n1/env-config", json=first).status_code == 200
        # a second editor that also read "no config yet" must not overwrite the first save
        second_body = {"env": {"WHO": "second"}, "resource_version": 0}
        second = client.put("/api/v1/nodes/n1/env-config", json=second_body)
        assert second.status_code == 409, second.text
        assert client.get("/api/v1/nodes/n1/env-config").json()["env"] == {"WHO": "first"}
        config = {
            "proxy": {
                "http_proxy": "http://bob:hunter2@proxy.local:3128",
                "https_proxy": "socks5h://10.0.0.1:1080",
                "no_proxy": "localhost,127.0.0.1,.internal",
            },
            "env": {"FOO": "bar", "_X1": ""},
        }
        saved = client.put("/api/v1/nodes/n1/env-config", json=config)
        assert saved.status_code == 200, saved.text
        masked = {**config["proxy"], "http_proxy": "http://bob:***@proxy.local:3128"}
        assert saved.json()["proxy"] == masked  # passwords read back as ***
        assert saved.json()["env"] == config["env"]  # plain env values as they are
        assert client.get("/api/v1/nodes/n1/env-config").json()["proxy"] == masked
        revealed = client.get("/api/v1/nodes/n1/env-config", params={"reveal": "true"}).json()
        assert revealed["proxy"] == config["proxy"]
        for bad, field in [
            ({"proxy": {"http_proxy": "ftp://proxy:21"}}, "proxy.http_proxy"),
            ({"proxy": {"https_proxy": "http://:3128"}}, "proxy.https_proxy"),
            ({"proxy": {"http_proxy": "http://proxy:99999"}}, "proxy.http_proxy"),
            ({"env": {"1BAD": "x"}}, "env"),
            ({"env": {"A-B": "x"}}, "env"),
            ({"env": "nope"}, "env"),
        ]:
            response = client.put("/api/v1/nodes/n1/env-config", json=bad)
            assert 400 <= response.status_code < 500, (bad, response.text)
            assert field in response.json()["detail"], response.json()
        stale = client.put("/api/v1/nodes/n1/env-config", json={**config, "resource_version": 99})
        assert stale.status_code == 409
        audit = client.get("/api/v1/audit", params={"action": "env_config.replace"}).json()
        assert audit["total"] == 2  # the first save above, then `config`
        assert client.get("/api/v1/audit", params={"action": "env_config.reveal"}).json()["total"] == 1
        entry = audit["items"][0]
        assert entry["actor"] == "admin"
        assert entry["target_id"] == "n1"
        assert "hunter2" not in str(entry)
        assert "bob:***@proxy.local" in str(entry)


def test_no_input_produces_a_500(apiserver: ApiServerFactory) -> None:
    server = apiserver({"MAX_BODY_SIZE": "4096"})
    with server.client() as client:
        beat(client, "n1")
        hb = "/api/v1/nodes/heartbeat"
        cases: list[tuple[str, str, Any, int]] = [
            ("POST", hb, b"{not json", 400),
            ("POST", hb, b"", 400),
            ("POST", hb, b"[]", 400),
            ("POST", hb, b'{"node_id": 5}', 400),
            ("POST", hb, b'{"node_id": "a", "capacity": {"max_concurrent": "x"}}', 400),
            ("POST", hb, b'{"node_id": "a", "capacity": {"max_concurrent": 99999999999999999999999}}', 400),
            ("POST", hb, b'{"node_id": "a", "capacity": {"max_concurrent": 0}}', 400),
            ("POST", hb, b'{"node_id": "a", "labels": {"k": "v\\u0000"}}', 400),
            ("POST", hb, b'{"node_id": "bad id"}', 400),
            ("POST", hb, b'{"node_id": "' + b"x" * 300 + b'"}', 400),
            ("POST", hb, b'{"node_id": "\\u00e9t\\u00e9"}', 400),
            ("POST", hb, b'{"node_id": "a", "labels": "oops"}', 400),
            ("POST", hb, b'{"node_id": "a", "junk": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400),
            ("POST", hb, b'{"node_id": "a", "pad": "' + b"x" * 8000 + b'"}', 413),
            ("PATCH", "/api/v1/nodes/n1", b'{"labels": {"a": 5}}', 400),
            ("PATCH", "/api/v1/nodes/n1", b'{"resource_version": "x"}', 400),
            ("PATCH", "/api/v1/nodes/n1", b'{"status": "online"}', 200),
            ("PATCH", "/api/v1/nodes/n1", b"null", 400),
            ("PUT", "/api/v1/nodes/n1/env-config", b'{"env": {"A": 1}}', 400),
            ("PUT", "/api/v1/nodes/n1/env-config", b'{"env": {"A": "\\u0000"}}', 400),
            ("GET", "/api/v1/nodes/%C3%A9t%C3%A9", None, 400),
            ("GET", "/api/v1/nodes/" + "x" * 5000, None, 400),
            ("GET", "/api/v1/nodes/a%2Fb", None, 400),
            ("GET", "/api/v1/nodes/a%00b", None, 400),
            ("GET", "/api/v1/nodes/%ZZ", None, 400),
            ("GET", "/api/v1/nodes/..%2F..%2Fetc", None, 400),
            ("DELETE", "/api/v1/nodes/%F0%9F%92%A5", None, 400),
            ("GET", "/api/v1/nodes?limit=999999999999999999999999", None, 400),
            ("GET", "/api/v1/nodes?offset=99999999999999999999", None, 400),
            ("GET", "/api/v1/nodes?selector=%00%3D%00", None, 400),
            ("GET", "/api/v1/nodes/n1", None, 200),
            ("GET", "/api/v1/audit?limit=-5", None, 400),
            ("GET", "/api/v1/audit?target_id=a%00b", None, 400),
            ("GET", "/api/v1/nodes/a%00b/env-config", None, 400),
            ("POST", hb, b'{"node_id": "n2", "info": {"hostname": "h\\u0000x", "cpus": 99999999999}}', 200),
            ("POST", "/api/v1/nodes", b"{}", 405),
            ("GET", "/api/v1/nope", None, 404),
        ]
        for method, path, body, expected in cases:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            response = client.request(method, path, content=body, headers=headers)
            assert response.status_code == expected, (
                method,
                path[:80],
                response.status_code,
                response.text[:300],
            )
            if expected >= 400:
                error = response.json()
                assert error["status_code"] == expected, error
                assert isinstance(error["detail"], str), error
        assert server.running


def test_migrations_and_openapi(apiserver: ApiServerFactory) -> None:
    first = apiserver()
    with first.client() as client:
        beat(client, "kept")
    first.stop()
    second = apiserver()  # same database: migrations are a no-op, data survives
    with second.client() as client:
        assert client.get("/api/v1/nodes/kept").status_code == 200
        schema = client.get("/schema/openapi.json").json()
        for path in (
            "/api/v1/nodes",
            "/api/v1/nodes/{node_id}",
            "/api/v1/nodes/{node_id}/env-config",
            "/readyz",
        ):
            assert path in schema["paths"], path


@pytest.mark.slow
def test_listing_ten_thousand_nodes(apiserver: ApiServerFactory, database_url: str) -> None:
    """The whole fleet in one page, and a filtered part of it; how fast is bench/node_listing.py's."""
    server = apiserver()
    db.insert_nodes(database_url, 10_000)
    with server.client(timeout=30.0) as client:
        response = client.get("/api/v1/nodes", params={"limit": 10_000})
        assert response.status_code == 200
        body = response.json()
        assert (body["total"], body["limit"], body["offset"]) == (10_000, 10_000, 0)
        assert [node["id"] for node in body["items"]] == [f"node-{i:05d}" for i in range(10_000)]
        assert {node["status"] for node in body["items"]} == {"online"}
        labels = [node["labels"] for node in body["items"]]
        assert labels == [{"os": "linux", "rack": f"r{i % 10}"} for i in range(10_000)]
        assert body["items"][1234]["capacity"] == {"max_concurrent": 4, "cpus": None, "memory_mb": None}
        assert body["items"][1234]["info"]["hostname"] == "host-1234"
        filtered = client.get("/api/v1/nodes", params={"selector": "rack=r3", "status": "online"}).json()
        assert filtered["total"] == 1000
        assert [node["id"] for node in filtered["items"]] == [f"node-{i:05d}" for i in range(3, 10_000, 10)]


@pytest.mark.postgres
def test_database_outage_answers_503_not_500() -> None:
    with PostgresServer() as postgres:
        server = ServerProcess(env={"DATABASE_URL": postgres.create_database()}).start()
        try:
            with server.client() as client:
                beat(client, "n1")
                postgres.stop()
                for response in (
                    client.get("/api/v1/nodes"),
                    client.post("/api/v1/nodes/heartbeat", json={"node_id": "n1"}),
                    client.get("/readyz"),
                ):
                    assert response.status_code == 503, response.text
                    assert "database" in response.json()["detail"]
                assert client.get("/healthz").status_code == 200
        finally:
            server.close()
