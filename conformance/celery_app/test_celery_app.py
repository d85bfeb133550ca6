"""Runs the Celery application in tasks.py: two workers (solo pool, one
task at a time) and a client, against whichever broker the environment names.
"""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    work = tmp_path_factory.mktemp("celery")
    os.environ.setdefault("CELERY_RUN_ID", uuid.uuid4().hex[:10])
    os.environ["CELERY_WORK_DIR"] = str(work)
    sys.path.insert(0, str(HERE))
    import tasks

    workers = []
    for name in ("w1", "w2"):
        env = dict(os.environ, WORKER_NAME=name)
        log = open(work / f"{name}.log", "w")
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-n", f"{name}@%h",
             "--pool=solo", "--without-gossip", "--without-mingle", "--loglevel=INFO",
             "-Q", f"{tasks.WORK_QUEUE},{tasks.BROADCAST}"],
            cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT))
    # Ready once both workers consume their broadcast queue (fanout: one each).
    deadline = time.time() + 60
    while time.time() < deadline:
        logs = [(work / f"{n}.log").read_text() for n in ("w1", "w2")]
        if all("ready." in text for text in logs):
            break
        time.sleep(0.3)
    else:
        pytest.fail("workers did not start: " + (work / "w1.log").read_text()[-2000:])
    yield tasks, work
    for w in workers:
        w.terminate()
    for w in workers:
        try:
            w.wait(10)
        except subprocess.TimeoutExpired:
            w.kill()


def test_a_task_returns_its_result(app):
    tasks, _ = app
    assert tasks.add.delay(2, 3).get(timeout=30) == 5


def test_many_tasks_return_their_own_results(app):
    tasks, _ = app
    results = [tasks.add.delay(i, i) for i in range(20)]
    assert [r.get(timeout=60) for r in results] == [2 * i for i in range(20)]


def test_a_failing_task_is_retried_until_it_succeeds(app):
    tasks, work = app
    key = uuid.uuid4().hex
    assert tasks.flaky.delay(key).get(timeout=60) == 3
    assert (work / f"flaky-{key}").read_text() == "3"


def test_a_broadcast_reaches_every_worker(app):
    tasks, work = app
    token = uuid.uuid4().hex
    tasks.ping_all.apply_async(args=[token], queue=tasks.BROADCAST)
    deadline = time.time() + 30
    while time.time() < deadline:
        seen = sorted(p.name for p in work.glob(f"ping-{token}-*"))
        if len(seen) == 2:
            break
        time.sleep(0.2)
    assert seen == [f"ping-{token}-w1", f"ping-{token}-w2"]


def test_acks_late_hands_a_task_whose_worker_died_to_another(app):
    # Last: it kills one of the two workers.
    tasks, work = app
    key = uuid.uuid4().hex
    result = tasks.crash_once.delay(key).get(timeout=90)
    assert result.startswith("survived after")
    assert (work / f"crash-{key}").exists()
