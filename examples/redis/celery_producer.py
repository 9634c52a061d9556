#!/usr/bin/env python3
"""Submits tasks to the Celery worker over the SPIFFE-mTLS Redis and waits
for every result; exits 0 only if none was lost.

    python3 celery_producer.py --count 20 --interval 0.2

Prints one JSON line: {"submitted": N, "completed": N, "lost": [...],
"seconds": ...}. Same environment as celery_worker.py.
"""

import argparse
import json
import sys
import time

from celery_tasks import add


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=10, help="tasks to submit")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between submissions")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for all results")
    a = p.parse_args()

    start = time.monotonic()
    pending = []
    for i in range(a.count):
        pending.append((i, add.delay(i, 1000)))
        if a.interval:
            time.sleep(a.interval)
    deadline = start + a.count * a.interval + a.timeout
    lost, wrong = [], []
    for i, r in pending:
        try:
            v = r.get(timeout=max(0.1, deadline - time.monotonic()))
        except Exception as e:  # timeout or a failed task: not completed
            lost.append({"task": i, "id": r.id, "error": repr(e)})
            continue
        if v != i + 1000:
            wrong.append({"task": i, "got": v})
    out = {
        "submitted": a.count,
        "completed": a.count - len(lost) - len(wrong),
        "lost": lost,
        "wrong": wrong,
        "seconds": round(time.monotonic() - start, 3),
    }
    print(json.dumps(out))
    return 0 if not lost and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
