#!/usr/bin/env python3
"""A tiny HTTPS Kubernetes API server for tests/it/credential.rs (python3 standard library only).

Usage: apiserver.py --cert leaf.pem --key leaf.key --token-file PATH

Binds 127.0.0.1 on a free port, prints `LISTENING <port>` on stdout, then serves one route:
GET /version (with any query) answers 200 with a small version body, as a real API server does, when and only when
the request carries `Authorization: Bearer X` and X is the `token` of the tokenkeeper json output at
PATH as it is at that moment: the file is read again at every request, so a token the daemon has
since replaced, or any token once the file is gone, is refused with a 401 and a Kubernetes
`Status` body. Any other request is a 404.

Each answered request is reported on stderr as one `AUTHORIZED <path>` or
`UNAUTHORIZED <path> <reason>` line (never a token), so the test can tell "kubectl sent the
current token" apart from "kubectl never got that far". The server exits when its stdin reaches
EOF, so it cannot outlive a test process that died without killing it.
"""

import argparse
import http.server
import json
import os
import ssl
import sys
import threading
import urllib.parse

VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0"}


def current_token(path):
    """The token in the json output at `path` now, or None with the reason it has none."""
    try:
        with open(path) as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return None, "no token file"
    except (OSError, ValueError) as error:
        return None, f"unreadable token file ({type(error).__name__})"
    token = document.get("token") if isinstance(document, dict) else None
    if not isinstance(token, str) or not token:
        return None, "no token in the file"
    return token, None


class ApiHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 with an explicit Content-Length, as a real API server answers.
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        # The path without its query: kubectl adds `?timeout=...` for --request-timeout.
        path = urllib.parse.urlsplit(self.path).path
        if path != "/version":
            self._reply(404, status_body(404, "NotFound", "the server could not find the resource"))
            return
        token, reason = current_token(self.server.token_file)
        if reason is None:
            sent = self.headers.get("Authorization") or ""
            if not sent.startswith("Bearer "):
                reason = "no bearer token sent"
            elif sent[len("Bearer "):] != token:
                reason = "not the token in the file"
        if reason is None:
            print(f"AUTHORIZED {path}", file=sys.stderr, flush=True)
            self._reply(200, VERSION)
        else:
            print(f"UNAUTHORIZED {path} {reason}", file=sys.stderr, flush=True)
            self._reply(401, status_body(401, "Unauthorized", "Unauthorized"))

    def _reply(self, status, body):
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        # Quiet: stderr carries the AUTHORIZED / UNAUTHORIZED lines only.
        pass


def status_body(code, reason, message):
    """A Kubernetes `Status` object, the body a real API server sends with an error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class ApiServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context, token_file):
        self.context = context
        self.token_file = token_file
        super().__init__(("127.0.0.1", 0), ApiHandler)

    def finish_request(self, request, client_address):
        # The handshake runs in the connection's own thread, as in tests/tls/server.py.
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as error:
            print(f"HANDSHAKE FAILED {error}", file=sys.stderr, flush=True)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            self.shutdown_request(tls)

    def handle_error(self, request, client_address):
        # A client that drops the connection mid-request is not the server's failure.
        print(f"CONNECTION ERROR {sys.exc_info()[1]}", file=sys.stderr, flush=True)


def exit_on_stdin_eof():
    sys.stdin.read()
    os._exit(0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cert", required=True, help="server certificate chain (PEM)")
    parser.add_argument("--key", required=True, help="the certificate's private key (PEM)")
    parser.add_argument("--token-file", required=True, help="the tokenkeeper json output")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    # kubectl (Go) offers h2 first; this server speaks HTTP/1.1 only.
    context.set_alpn_protocols(["http/1.1"])

    server = ApiServer(context, args.token_file)
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
