"""The Celery app of the worker and the producer: broker and result backend
over rediss:// with the SVID files identity-agent writes for the client
workload (settings from celery_client.py: SVID_DIR, REDIS_HOST,
REDIS_TLS_PORT, REDIS_PASSWORD_FILE).

The same app works in every phase of the migration from B on: in B and C
the password is sent on the TLS port too; in D the certificate is the
credential and the password, still sent as "AUTH default <pw>", is
accepted; after a rollback to B it is required again. kombu and redis-py
open the certificate files for every new connection, so a rotation needs
no restart.
"""

from celery import Celery

import celery_client

app = Celery("identity_agent_example")
app.conf.update(
    broker_url=celery_client.broker_url,
    result_backend=celery_client.result_backend,
    broker_use_ssl=celery_client.broker_use_ssl,
    redis_backend_use_ssl=celery_client.redis_backend_use_ssl,
    # A task is acknowledged after it ran: a worker that loses its
    # connection mid-task gets it again instead of dropping it.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 300},
    result_expires=3600,
)


@app.task(name="example.add")
def add(x, y):
    return x + y
