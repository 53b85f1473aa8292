"""Celery side of bench/tasks.sh: the app its worker runs, and a publisher.

Settings as the benchmark asks (the same as DeployGuard's worker): persistent messages,
publisher confirms (confirm_publish, so each publish waits for the broker's ack like
ours), late acknowledgement, prefetch 1 per process (worker_prefetch_multiplier=1; the
worker runs with -c 2). Environment: BENCH_BROKER_URL (required), BENCH_RESULT_BACKEND
(optional, e.g. db+postgresql+psycopg2://postgres@127.0.0.1:5432/NAME).

    python celery_app.py publish --count N --task bench.noop   -> one JSON line

bench.noop ignores its result (nothing is stored even with a backend); bench.noop_recorded
stores it (Celery only writes results for tasks with ignore_result=False).
"""

import argparse
import json
import os
import sys
import time

from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_BROKER_URL"])
backend = os.environ.get("BENCH_RESULT_BACKEND") or None
app.conf.update(
    result_backend=backend,
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    task_default_delivery_mode="persistent",
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop", ignore_result=True)
def noop():
    return None


@app.task(name="bench.noop_recorded", ignore_result=False)
def noop_recorded():
    return None


def publish(count, task_name):
    task = app.tasks[task_name]
    if backend:
        # Create the result tables now rather than on the worker's first task.
        app.backend.ResultSession().close()
    with app.producer_or_acquire() as producer:
        # Connect (and open the confirm-mode channel) outside the timing, as ours does.
        producer.connection.ensure_connection()
        channel = producer.channel
        confirm = bool(getattr(channel.connection, "confirm_publish", False))
        started = time.perf_counter()
        for _ in range(count):
            task.apply_async(producer=producer)
        seconds = time.perf_counter() - started
    print(json.dumps({
        "what": "celery-publish",
        "task": task_name,
        "count": count,
        "confirm_publish": confirm,
        "seconds": seconds,
        "per_second": count / seconds if seconds > 0 else 0.0,
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--task", default="bench.noop")
    args = parser.parse_args()
    if args.command == "publish":
        publish(args.count, args.task)
    sys.exit(0)
