"""Python clients of a SPIFFE-mTLS Redis (phase B onward), using the files
identity-agent writes for the client workload (an output like the Redis
one in agent.yaml, with the worker's spiffe_id, e.g. dir /var/lib/identity-agent/worker).

redis-py and Celery/kombu open the certificate files on every new
connection, so rotated files are picked up by new connections without a
restart; established connections keep their session, which is fine for TLS.

Hostname checking must be off: X.509-SVIDs carry a spiffe:// URI SAN, not
a DNS name. The plain redis-py client below checks the server's SPIFFE ID
instead; Celery's settings can only pin the chain to the trust bundle.
"""

import os
import ssl
from urllib.parse import quote

import redis

SVID_DIR = os.environ.get("SVID_DIR", "/var/lib/identity-agent/worker")
CERT = f"{SVID_DIR}/svid.pem"
KEY = f"{SVID_DIR}/key.pem"
BUNDLE = f"{SVID_DIR}/bundle.pem"
REDIS_HOST = os.environ.get("REDIS_HOST", "redis.internal")
REDIS_TLS_PORT = int(os.environ.get("REDIS_TLS_PORT", "6380"))
REDIS_SPIFFE_ID = os.environ.get("REDIS_SPIFFE_ID", "spiffe://example.org/redis")
# Phases B and C require the password on TLS too. Phase D clears
# requirepass; the password is then still accepted when sent with the
# username ("AUTH default <pw>"), so these clients name the user "default"
# and keep working across D and a rollback from it.
PASSWORD_FILE = os.environ.get("REDIS_PASSWORD_FILE", "/etc/worker/redis.pass")


def _password():
    if not PASSWORD_FILE or not os.path.exists(PASSWORD_FILE):
        return None
    with open(PASSWORD_FILE) as f:
        return f.read().rstrip("\r\n") or None


# --- Celery (broker and result backend over rediss://) ---------------------
_pw = _password()
_auth = f"default:{quote(_pw, safe='')}@" if _pw else ""
broker_url = f"rediss://{_auth}{REDIS_HOST}:{REDIS_TLS_PORT}/0"
result_backend = f"rediss://{_auth}{REDIS_HOST}:{REDIS_TLS_PORT}/1"
_tls = {
    "ssl_cert_reqs": ssl.CERT_REQUIRED,
    "ssl_ca_certs": BUNDLE,
    "ssl_certfile": CERT,
    "ssl_keyfile": KEY,
    "ssl_check_hostname": False,
}
broker_use_ssl = _tls
redis_backend_use_ssl = _tls
# In celeryconfig.py: `from celery_client import *`, or
#   app.conf.update(broker_url=broker_url, result_backend=result_backend,
#                   broker_use_ssl=broker_use_ssl, redis_backend_use_ssl=redis_backend_use_ssl)


# --- redis-py with a SPIFFE ID check on the server -------------------------
class SpiffeSSLConnection(redis.connection.SSLConnection):
    """Refuses a Redis server whose SVID is not REDIS_SPIFFE_ID."""

    expected_spiffe_id = REDIS_SPIFFE_ID

    def _connect(self):
        sock = super()._connect()
        cert = sock.getpeercert() or {}
        uris = [v for k, v in cert.get("subjectAltName", ()) if k == "URI"]
        if self.expected_spiffe_id not in uris:
            sock.close()
            raise redis.exceptions.ConnectionError(
                f"Redis server SPIFFE ID {uris} is not {self.expected_spiffe_id}"
            )
        return sock


def spiffe_redis(db=0):
    pool = redis.ConnectionPool(
        connection_class=SpiffeSSLConnection,
        host=REDIS_HOST,
        port=REDIS_TLS_PORT,
        db=db,
        username="default",
        password=_password(),
        ssl_cert_reqs="required",
        ssl_ca_certs=BUNDLE,
        ssl_certfile=CERT,
        ssl_keyfile=KEY,
        ssl_check_hostname=False,
    )
    return redis.Redis(connection_pool=pool)


if __name__ == "__main__":
    r = spiffe_redis()
    print(r.ping())
