"""Pure placement and selectors, table-driven."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from server.scheduler.placement import (
    Assign,
    Decision,
    NodeSnapshot,
    NodeState,
    PendingRun,
    Unschedulable,
    place,
)
from server.scheduler.selectors import compile_selector


def node(
    node_id: str, running: int = 0, max_concurrent: int = 4, state: NodeState = "online", **labels: str
) -> NodeSnapshot:
    return NodeSnapshot(node_id, labels, running, max_concurrent, state)


def run(run_id: str, selector: dict[str, str] | None = None, *expressions: str) -> PendingRun:
    return PendingRun(run_id, compile_selector(selector, expressions))


def avoiding(run_id: str, *nodes: str) -> PendingRun:
    return PendingRun(run_id, compile_selector(None, ()), frozenset(nodes))


def sized(
    run_id: str, cpu_millis: int = 0, memory_mb: int = 0, selector: dict[str, str] | None = None
) -> PendingRun:
    return PendingRun(run_id, compile_selector(selector, ()), frozenset(), cpu_millis, memory_mb)


def sized_node(
    node_id: str,
    cpu_millis: int | None,
    memory_mb: int | None,
    used: tuple[int, int] = (0, 0),
    running: int = 0,
    max_concurrent: int = 8,
    **labels: str,
) -> NodeSnapshot:
    return NodeSnapshot(node_id, labels, running, max_concurrent, "online", cpu_millis, memory_mb, *used)


@dataclass
class Case:
    name: str
    nodes: list[NodeSnapshot]
    runs: list[PendingRun]
    expected: list[Decision]


CASES = [
    Case(
        "least loaded by ratio, not by count",
        [node("big", running=3, max_concurrent=8), node("small", running=1, max_concurrent=2)],
        [run("r1")],
        [Assign("r1", "big")],
    ),
    Case(
        "equal ratio: fewer running wins",
        [node("a", running=2, max_concurrent=4), node("b", running=1, max_concurrent=2)],
        [run("r1")],
        [Assign("r1", "b")],
    ),
    Case(
        "full tie: lower node id wins",
        [node("n2"), node("n1"), node("n3")],
        [run("r1")],
        [Assign("r1", "n1")],
    ),
    Case(
        "a batch spreads over nodes as load grows",
        [node("a", max_concurrent=2), node("b", max_concurrent=2)],
        [run("r1"), run("r2"), run("r3")],
        [Assign("r1", "a"), Assign("r2", "b"), Assign("r3", "a")],
    ),
    Case(
        "a batch never over-fills",
        [node("a", running=1, max_concurrent=2), node("b", max_concurrent=1)],
        [run("r1"), run("r2"), run("r3")],
        [Assign("r1", "b"), Assign("r2", "a"), Unschedulable("r3", "0/2 nodes available: 2 at capacity")],
    ),
    Case(
        "equality selector",
        [node("cpu1", gpu="false"), node("gpu1", running=3, gpu="true")],
        [run("r1", {"gpu": "true"})],
        [Assign("r1", "gpu1")],
    ),
    Case(
        "selector needs every pair",
        [node("a", gpu="true"), node("b", gpu="true", zone="z1")],
        [run("r1", {"gpu": "true", "zone": "z1"})],
        [Assign("r1", "b")],
    ),
    Case(
        "set-based in / notin / exists / not exists",
        [
            node("a", zone="z1"),
            node("b", running=1, zone="z2", spot="yes"),
            node("c", running=2, zone="z3", ssd="1"),
        ],
        [
            run("in", None, "zone in (z2,z3)"),
            run("notin", None, "zone notin (z1,z2)"),
            run("exists", None, "spot"),
            run("not-exists", None, "!spot", "!ssd"),
        ],
        [Assign("in", "b"), Assign("notin", "c"), Assign("exists", "b"), Assign("not-exists", "a")],
    ),
    Case(
        "selectors sharing nodes see each other's assignments",
        [node("a", max_concurrent=1, gpu="true"), node("b", max_concurrent=1, gpu="true")],
        [run("r1", {"gpu": "true"}), run("r2", None, "gpu"), run("r3", None, "gpu in (true)")],
        [
            Assign("r1", "a"),
            Assign("r2", "b"),
            Unschedulable("r3", "0/2 nodes available: 2 at capacity (1/1)"),
        ],
    ),
    Case(
        "interleaved selectors skip entries made stale by the other pool",
        [node("a", max_concurrent=2, gpu="true"), node("b", max_concurrent=2, gpu="true")],
        [
            run("r1", {"gpu": "true"}),
            run("r2", None, "gpu"),
            run("r3", {"gpu": "true"}),
            run("r4", None, "gpu"),
        ],
        [Assign("r1", "a"), Assign("r2", "b"), Assign("r3", "a"), Assign("r4", "b")],
    ),
    Case(
        "draining and offline nodes take nothing",
        [node("d", state="draining"), node("o", state="offline"), node("z", running=3)],
        [run("r1")],
        [Assign("r1", "z")],
    ),
    Case(
        "reason groups nodes: mismatch, identical capacity, draining",
        [
            node("c1", gpu="false"),
            node("c2", gpu="false"),
            node("g1", running=4, gpu="true"),
            node("g2", running=4, gpu="true"),
            node("g3", gpu="true", state="draining"),
        ],
        [run("r1", {"gpu": "true"})],
        [
            Unschedulable(
                "r1", "0/5 nodes available: 2 do not match gpu=true, 2 at capacity (4/4), 1 draining"
            )
        ],
    ),
    Case(
        "reason with differing capacities and offline nodes",
        [
            node("a", running=4, max_concurrent=4),
            node("b", running=2, max_concurrent=2),
            node("c", state="offline"),
        ],
        [run("r1")],
        [Unschedulable("r1", "0/3 nodes available: 2 at capacity, 1 offline")],
    ),
    Case(
        "reason names set-based requirements",
        [node("a", zone="z9"), node("b")],
        [run("r1", {"gpu": "true"}, "zone in (z2,z1)")],
        [Unschedulable("r1", "0/2 nodes available: 2 do not match gpu=true,zone in (z1,z2)")],
    ),
    Case(
        "no nodes at all",
        [],
        [run("r1")],
        [Unschedulable("r1", "0/0 nodes available: no nodes are registered")],
    ),
    Case(
        "held-back nodes take nothing, and the reason says why",
        [
            node("sick", state="unhealthy"),
            node("jailed", state="quarantined"),
            node("busy", running=1, max_concurrent=1),
        ],
        [run("r1")],
        [
            Unschedulable(
                "r1",
                "0/3 nodes available: 1 at capacity (1/1), 1 unhealthy (a condition fails), "
                "1 quarantined (starts kept failing)",
            )
        ],
    ),
    Case(
        "a run skips the nodes it avoids; others still use them",
        [node("a"), node("b", running=3)],
        [avoiding("r1", "a"), run("r2")],
        [Assign("r1", "b"), Assign("r2", "a")],
    ),
    Case(
        "a run that avoids every free node waits, and says so",
        [node("a"), node("b", running=4)],
        [avoiding("r1", "a")],
        [
            Unschedulable(
                "r1", "0/2 nodes available: 1 at capacity (4/4), 1 failed to start this run recently"
            )
        ],
    ),
    Case(
        "runs go only where their memory fits beside the node's active runs",
        [
            sized_node("small", 4000, 4096, used=(0, 3072), running=1),
            sized_node("big", 4000, 16384, running=3),
        ],
        [sized("r1", memory_mb=2048)],
        [Assign("r1", "big", 0, 2048)],
    ),
    Case(
        "the scarcest resource decides who is least loaded",
        [
            sized_node("cpu-busy", 4000, 16384, used=(3000, 0), running=1),  # 75% of its CPUs
            sized_node("slots-busy", 4000, 16384, running=4),  # 50% of its slots
        ],
        [sized("r1", cpu_millis=500)],
        [Assign("r1", "slots-busy", 500, 0)],
    ),
    Case(
        "a batch fills nodes by resources, not only by run count",
        [sized_node("a", 2000, 8192), sized_node("b", 2000, 8192)],
        [sized(f"r{i}", cpu_millis=1000) for i in range(5)],
        [
            Assign("r0", "a", 1000, 0),
            Assign("r1", "b", 1000, 0),
            Assign("r2", "a", 1000, 0),
            Assign("r3", "b", 1000, 0),
            Unschedulable("r4", "0/2 nodes available: 2 insufficient cpu"),
        ],
    ),
    Case(
        "a request too large for every node does not block smaller ones after it",
        [sized_node("a", 2000, 8192)],
        [sized("big", cpu_millis=3000), sized("small", cpu_millis=1000), sized("big2", cpu_millis=4000)],
        [
            Unschedulable("big", "0/1 nodes available: 1 insufficient cpu"),
            Assign("small", "a", 1000, 0),
            Unschedulable("big2", "0/1 nodes available: 1 insufficient cpu"),
        ],
    ),
    Case(
        "a node that reports no resources is limited by its run slots alone",
        [sized_node("legacy", None, None, running=1, max_concurrent=2)],
        [sized("r1", cpu_millis=64000, memory_mb=1 << 20), sized("r2", cpu_millis=1)],
        [
            Assign("r1", "legacy", 64000, 1 << 20),
            Unschedulable("r2", "0/1 nodes available: 1 at capacity (2/2)"),
        ],
    ),
    Case(
        "reasons count nodes by cause",
        [
            sized_node("c1", 4000, 4096, cpu="x"),
            sized_node("c2", 4000, 4096, cpu="x"),
            sized_node("g1", 4000, 4096, running=8, gpu="true"),
            sized_node("g2", 4000, 1024, gpu="true"),
            sized_node("g3", 4000, 1024, gpu="true"),
            sized_node("g4", 500, 8192, gpu="true"),
        ],
        [sized("r1", cpu_millis=1000, memory_mb=2048, selector={"gpu": "true"})],
        [
            Unschedulable(
                "r1",
                "0/6 nodes available: 2 do not match gpu=true, 1 at capacity (8/8), "
                "2 insufficient memory, 1 insufficient cpu",
            )
        ],
    ),
    Case(
        "zero capacity counts as at capacity",
        [node("a", max_concurrent=0)],
        [run("r1")],
        [Unschedulable("r1", "0/1 nodes available: 1 at capacity (0/0)")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_place(case: Case) -> None:
    assert place(case.runs, case.nodes) == case.expected


def test_place_fills_every_slot_exactly_once_in_a_large_batch() -> None:
    nodes = [node(f"n{i:03}", running=i % 3, max_concurrent=3 + i % 2, zone=f"z{i % 4}") for i in range(200)]
    free = sum(n.max_concurrent - n.running for n in nodes if n.labels["zone"] != "z0")
    runs = [run(f"r{i}", None, "zone notin (z0)") for i in range(free + 25)]
    decisions = place(runs, nodes)

    assigned = [d for d in decisions if isinstance(d, Assign)]
    assert len(assigned) == free
    assert all(isinstance(d, Unschedulable) for d in decisions[free:])
    per_node: dict[str, int] = {}
    for decision in assigned:
        per_node[decision.node_id] = per_node.get(decision.node_id, 0) + 1
    for snapshot in nodes:
        assert snapshot.running + per_node.get(snapshot.id, 0) <= snapshot.max_concurrent
        assert snapshot.labels["zone"] != "z0" or snapshot.id not in per_node


def test_place_does_not_change_its_inputs() -> None:
    nodes = [node("a", running=1)]
    place([run("r1"), run("r2")], nodes)
    assert nodes[0].running == 1


MATCHES = [
    ({"gpu": "true"}, [], {"gpu": "true", "x": "y"}, True),
    ({"gpu": "true"}, [], {"gpu": "false"}, False),
    ({"gpu": "true"}, [], {}, False),
    ({}, ["zone in (a, b)"], {"zone": "b"}, True),
    ({}, ["zone in (a,b)"], {}, False),
    ({}, ["zone notin (a,b)"], {}, True),
    ({}, ["zone notin (a,b)"], {"zone": "a"}, False),
    ({}, ["ssd"], {"ssd": ""}, True),
    ({}, ["!ssd"], {"ssd": "1"}, False),
    ({}, ["tier=gold"], {"tier": "gold"}, True),
    ({}, ["tier==gold"], {"tier": "gold"}, True),
    ({}, ["tier!=gold"], {}, True),
    ({}, ["tier!=gold"], {"tier": "gold"}, False),
    ({}, ["a=1,b in (x,y)"], {"a": "1", "b": "y"}, True),
    ({}, ["a=1,b in (x,y)"], {"a": "1", "b": "z"}, False),
    ({}, ["example.com/role=web"], {"example.com/role": "web"}, True),
]


@pytest.mark.parametrize(("selector", "expressions", "labels", "expected"), MATCHES)
def test_selector_matches(
    selector: dict[str, str], expressions: list[str], labels: dict[str, str], expected: bool
) -> None:
    assert compile_selector(selector, expressions).matches(labels) is expected


BAD = [
    ({}, ["zone in ()"], "needs at least one value"),
    ({}, ["zone in (a,b"], "unbalanced '('"),
    ({}, ["zone in a,b)"], "unbalanced ')'"),
    ({}, ["zone between (a,b)"], "cannot parse"),
    ({}, ["-bad in (a)"], "key '-bad' is invalid"),
    ({}, ["a..b/x in (a)"], "key 'a..b/x' has an invalid prefix"),
    ({}, ["a=1,,b=2"], "empty requirement"),
    ({}, [""], "empty selector expression"),
    ({}, ["k=bad value"], "cannot parse"),
    ({"k": "-x"}, [], "value '-x' of 'k' is invalid"),
    ({"bad key": "v"}, [], "key 'bad key' is invalid"),
]


@pytest.mark.parametrize(("selector", "expressions", "message"), BAD)
def test_selector_rejects_bad_syntax(selector: dict[str, str], expressions: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_selector(selector, expressions)


def test_selector_describe_and_signature_are_order_insensitive() -> None:
    first = compile_selector({"gpu": "true"}, ["zone in (b,a)", "!spot"])
    second = compile_selector({}, ["!spot", "zone in (a,b)", "gpu=true"])
    assert first.describe() == second.describe()
    assert first.signature == second.signature
    assert first.describe() == "gpu=true,!spot,zone in (a,b)"
    assert compile_selector({}, []).describe() == ""
