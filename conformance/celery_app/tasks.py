"""A small Celery application, as a team would write one, for the gateway's
conformance run: results over the rpc backend, late acknowledgement, a
retry, and a broadcast (fanout) queue. The broker is taken from the
environment (RABBITMQ_HOST / RABBITMQ_5672_TCP), the same variables the
py-amqp and kombu suites use.
"""
import os
from pathlib import Path

from celery import Celery
from kombu import Queue
from kombu.common import Broadcast

HOST = os.environ.get("RABBITMQ_HOST", "127.0.0.1")
PORT = os.environ.get("RABBITMQ_5672_TCP", "5672")
RUN = os.environ["CELERY_RUN_ID"]  # keeps runs (and targets) apart
WORK = Path(os.environ["CELERY_WORK_DIR"])  # where tasks leave traces

WORK_QUEUE = f"work-{RUN}"
BROADCAST = f"everyone-{RUN}"

app = Celery("gwapp", broker=f"pyamqp://guest:guest@{HOST}:{PORT}//", backend="rpc://")
app.conf.update(
    task_default_queue=WORK_QUEUE,
    task_queues=(Queue(WORK_QUEUE), Broadcast(BROADCAST)),
    task_routes={"tasks.ping_all": {"queue": BROADCAST, "exchange": BROADCAST}},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=None,
)


@app.task
def add(x, y):
    return x + y


@app.task(bind=True, max_retries=5)
def flaky(self, key):
    """Fails twice, then succeeds: the third attempt returns 3."""
    marker = WORK / f"flaky-{key}"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts < 3:
        raise self.retry(countdown=0.2)
    return attempts


@app.task
def crash_once(key):
    """The first worker to run it dies mid-task (no ack sent): with late
    acknowledgement the broker hands the message to another worker."""
    marker = WORK / f"crash-{key}"
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        os._exit(1)
    return f"survived after {marker.read_text()} died"


@app.task
def ping_all(token):
    """Sent to the broadcast queue: every worker runs it once."""
    name = os.environ.get("WORKER_NAME", "?")
    (WORK / f"ping-{token}-{name}").write_text("1")
    return name
