"""A minimal ASGI app for the uvicorn example (and its test).

Served directly with TLS (api.service), uvicorn has already checked the
client certificate's chain against the bundle, but it does not pass the
certificate to the app. Behind the agent's proxy (api-behind-proxy.service)
the proxy has also authorized the caller by SPIFFE ID and names it in
X-Forwarded-Client-Cert, which the app can use for per-caller decisions.
"""


def caller(headers):
    """The caller's SPIFFE ID from X-Forwarded-Client-Cert, or ""."""
    for name, value in headers:
        if name == b"x-forwarded-client-cert":
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.partition("=")
                if key.strip().lower() == "uri":
                    return val.strip()
    return ""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("ok caller=" + (caller(scope["headers"]) or "-") + "\n").encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
