"""A stand-in for Ollama's HTTP API, for try.sh (Ollama itself is not needed).

It listens on 127.0.0.1 like Ollama, answers GET /api/tags like Ollama, and
applies Ollama's guard against DNS rebinding for a loopback listener
(server/routes.go, allowedHostsMiddleware): a Host header that is not an IP
address, localhost, this machine's name or a .localhost/.local/.internal name
gets 403. That guard is why the agent's proxy has rewrite_host: true.
Each request is logged with the caller the proxy names in
X-Forwarded-Client-Cert.

    python3 ollama-stand-in.py PORT
"""
import ipaddress
import json
import socket
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def allowed_host(host):
    if host.startswith("["):
        host = host[1:host.find("]")]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    host = host.lower()
    try:
        ip = ipaddress.ip_address(host)
        return ip.is_loopback or ip.is_private or ip.is_unspecified
    except ValueError:
        pass
    if host in ("", "localhost", socket.gethostname().lower()):
        return True
    return host.endswith((".localhost", ".local", ".internal"))


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        host = self.headers.get("Host", "")
        caller = self.headers.get("X-Forwarded-Client-Cert", "-")
        print(f"GET {self.path} Host={host} X-Forwarded-Client-Cert={caller}", flush=True)
        if not allowed_host(host):
            self.answer(403, b"", "text/plain")
        elif self.path == "/api/tags":
            body = json.dumps({"models": [{"name": "llama3.2:3b", "model": "llama3.2:3b"}]}).encode()
            self.answer(200, body, "application/json; charset=utf-8")
        else:
            self.answer(404, b"404 page not found", "text/plain")

    def answer(self, code, body, ctype):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
