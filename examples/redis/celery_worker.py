#!/usr/bin/env python3
"""A Celery worker on the SPIFFE-mTLS Redis (see celery_tasks.py for the
connection settings):

    SVID_DIR=/var/lib/identity-agent/worker REDIS_HOST=redis.internal \
    REDIS_TLS_PORT=6380 REDIS_PASSWORD_FILE=/etc/worker/redis.pass \
        python3 celery_worker.py

One process, one task at a time (--pool=solo); no gossip, mingle or
heartbeat traffic, which a broker-only example does not need.
"""

import sys

from celery_tasks import app

if __name__ == "__main__":
    app.worker_main(
        ["worker", "--pool=solo", "--loglevel=INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
        + sys.argv[1:]
    )
