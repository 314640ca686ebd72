"""What bench/dispatch.py compares the run path with: Celery, Dask, and bare Docker.

Each task runs `subprocess.run(["true"])`, as a run of `true` does on the process runtime.
- Celery 5 prefork `-c 4`, Redis broker and result backend, defaults otherwise; N tasks sent
  with `delay()`, every result awaited.
- Dask distributed: a scheduler and 2 workers of 2 threads (4 slots), separate processes,
  `distributed.scheduler.worker-saturation: inf`; N futures from `client.map`, gathered.
- Docker: N runs of `true` on the local test image through the platform (Docker runtime,
  4 slots) next to a bare docker SDK `containers.run(remove=True)` loop, one at a time and on
  4 threads.
CPU is counted per task for the workers (a cpuacct cgroup around them) and the bench process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.measure import CpuGroup, CpuMeter, FastClient, load_average, submit_all
from tests.support.ports import free_port, wait_for_port
from tests.support.redis import RedisServer

WARM_UP = 20
TASKS_MODULE = """
import subprocess
{app}

def run_true(*_):
    return subprocess.run(["true"]).returncode
"""
CELERY_APP = """
from celery import Celery
app = Celery("bench", broker="{url}", backend="{url}")
"""


def run(name: str, tasks: int, timeout: float) -> dict[str, Any]:
    if name == "celery":
        return celery(tasks, timeout)
    if name == "dask":
        return dask(tasks, timeout)
    raise ValueError(f"unknown baseline {name!r}")


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def celery(tasks: int, timeout: float) -> dict[str, Any]:
    redis = RedisServer().start()
    group = CpuGroup("celery")
    with tempfile.TemporaryDirectory(prefix="bench-celery-") as tmp:
        module = Path(tmp) / "bench_celery_tasks.py"
        module.write_text(
            TASKS_MODULE.format(app=CELERY_APP.format(url=redis.url))
            + "\nrun_true_task = app.task(name='run_true')(run_true)\n"
        )
        env = os.environ | {"PYTHONPATH": tmp}
        worker = subprocess.Popen(
            [
                _bin("celery"),
                "-A",
                "bench_celery_tasks",
                "worker",
                "-P",
                "prefork",
                "-c",
                "4",
                "-l",
                "WARNING",
            ],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        group.add(worker.pid)
        sys.path.insert(0, tmp)
        try:
            import bench_celery_tasks  # type: ignore[import-not-found]

            task = bench_celery_tasks.run_true_task
            for result in [task.delay() for _ in range(WARM_UP)]:
                result.get(timeout=60)
            meter = CpuMeter({"workers": group.usage, "bench_client": time.process_time})
            load_before = load_average()
            meter.start()
            began = time.monotonic()
            results = [task.delay() for _ in range(tasks)]
            for result in results:
                result.get(timeout=max(1.0, began + timeout - time.monotonic()))
            elapsed = time.monotonic() - began
            meter.stop()
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("bench_celery_tasks", None)
            _stop(worker)
            group.close()
            redis.stop()
    return {
        "tasks": tasks,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(tasks / elapsed, 1),
        "cpu_ms_per_task": meter.per_item_ms(tasks),
        "load_average": [load_before, load_average()],
        "setup": "celery prefork -c 4, redis broker + backend, subprocess.run(['true'])",
    }


def dask(tasks: int, timeout: float) -> dict[str, Any]:
    from distributed import Client

    group = CpuGroup("dask")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        (Path(tmp) / "bench_dask_tasks.py").write_text(TASKS_MODULE.format(app=""))
        env = os.environ | {
            "PYTHONPATH": tmp,
            "DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": "inf",
        }
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp, "env": env}
        address = f"tcp://127.0.0.1:{port}"
        scheduler = subprocess.Popen(
            [_bin("dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet
        )
        group.add(scheduler.pid)
        workers = [
            subprocess.Popen(
                [_bin("dask"), "worker", address, "--nthreads", "2", "--no-nanny", "--no-dashboard"], **quiet
            )
            for _ in range(2)
        ]
        for worker in workers:
            group.add(worker.pid)
        sys.path.insert(0, tmp)
        try:
            wait_for_port(port, timeout=30)
            import bench_dask_tasks  # type: ignore[import-not-found]

            with Client(address, timeout=30) as client:
                client.wait_for_workers(2, timeout=30)
                client.gather(client.map(bench_dask_tasks.run_true, range(WARM_UP), pure=False))
                meter = CpuMeter({"workers": group.usage, "bench_client": time.process_time})
                load_before = load_average()
                meter.start()
                began = time.monotonic()
                futures = client.map(bench_dask_tasks.run_true, range(tasks), pure=False)
                client.gather(futures)
                elapsed = time.monotonic() - began
                meter.stop()
                if elapsed > timeout:
                    raise TimeoutError(f"dask took {elapsed:.0f}s")
        finally:
            sys.path.remove(tmp)
            sys.modules.pop("bench_dask_tasks", None)
            for process in (*workers, scheduler):
                _stop(process)
            group.close()
    return {
        "tasks": tasks,
        "seconds": round(elapsed, 3),
        "tasks_per_s": round(tasks / elapsed, 1),
        "cpu_ms_per_task": meter.per_item_ms(tasks),
        "load_average": [load_before, load_average()],
        "setup": "dask distributed, 2 workers x 2 threads, worker-saturation inf, subprocess.run(['true'])",
    }


def docker_figure(runs: int, timeout: float) -> dict[str, Any]:
    """Containers per second on one node through the platform, and a bare SDK loop."""
    import docker

    from tests.support.docker import remove_test_containers
    from tests.support.images import TEST_LABELS, ensure_test_image

    client = docker.from_env()
    image = ensure_test_image(client)
    remove_test_containers(client)
    platform = _docker_platform(image, runs, timeout)

    def bare_one(_: int) -> None:
        client.containers.run(image, ["true"], remove=True, network_mode="none", labels=TEST_LABELS)

    bare = {}
    for threads in (1, 4):
        began = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(bare_one, range(runs)))
        bare[f"sdk_run_remove_{threads}_at_a_time_per_s"] = round(runs / (time.monotonic() - began), 2)
    remove_test_containers(client)
    return {"runs": runs, "image": image, "platform_runs_per_s": platform} | bare


def _docker_platform(image: str, runs: int, timeout: float) -> float:
    from tests.support.nodemanager import NodeManagerProcess
    from tests.support.server import ServerProcess

    with tempfile.TemporaryDirectory(prefix="bench-docker-") as tmp:
        env = {"NODE_HEARTBEAT_INTERVAL": "5", "LOG_LEVEL": "WARNING"}
        with ServerProcess(env=env, data_dir=Path(tmp)) as server:
            node = NodeManagerProcess(server.base_url, Path(tmp), "bench-docker", {"LOG_LEVEL": "WARNING"})
            node.start()
            try:
                return asyncio.run(_docker_runs(server.port, image, runs, timeout))
            finally:
                node.stop()


async def _docker_runs(port: int, image: str, runs: int, seconds: float) -> float:
    from bench.dispatch import _wait_all_done, _wait_online

    client = FastClient(port, connections=4)
    await client.open()
    try:
        await _wait_online(client, "bench-docker", time.monotonic() + 30)
        bodies = [{"image": image, "command": ["true"]} for _ in range(runs)]
        await submit_all(client, bodies[:4])
        await _wait_all_done(client, 4, time.monotonic() + 60)
        began = time.monotonic()
        await submit_all(client, bodies)
        finished = await _wait_all_done(client, 4 + runs, began + seconds)
    finally:
        await client.close()
    return round(runs / (finished - began), 2)
