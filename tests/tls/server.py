#!/usr/bin/env python3
"""A tiny HTTPS token endpoint for tests/it/tls.rs (python3 standard library only).

Usage: server.py --cert leaf.pem --key leaf.key --count-file PATH

Binds 127.0.0.1 on a free port, prints `LISTENING <port>` on stdout, then serves:
POST /token answers a Bearer token `tls-token-<n>` and writes n, the number of token requests
served so far, to the count file; any other request is a 404. The count file is the test's proof of
whether a request (and so a credential) ever reached the server: it starts at 0 and changes only
after a complete HTTP request arrived over an established TLS session.

Each failed TLS handshake is reported on stderr as one `HANDSHAKE FAILED <reason>` line, so the
test can tell "refused at the handshake" apart from "never connected". A failed handshake ends that
one connection only. The server exits when its stdin reaches EOF, so it cannot outlive a test
process that died without killing it.
"""

import argparse
import http.server
import json
import os
import ssl
import sys
import threading


class TokenHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 with an explicit Content-Length, as real token endpoints answer.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        # Read the body first: answering before it is consumed can reset the connection.
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != "/token":
            self._reply(404, {"error": "not_found"})
            return
        counter = self.server.count_request()
        self._reply(
            200,
            {
                "access_token": f"tls-token-{counter}",
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )

    def do_GET(self):
        self._reply(404, {"error": "not_found"})

    def _reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        # Quiet: the test reads stderr for handshake failures only.
        pass


class TlsTokenServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context, count_file):
        self.context = context
        self.count_file = count_file
        self.counter = 0
        self.lock = threading.Lock()
        self._write_count()
        super().__init__(("127.0.0.1", 0), TokenHandler)

    def count_request(self):
        with self.lock:
            self.counter += 1
            self._write_count()
            return self.counter

    def _write_count(self):
        # Whole number through a rename, so a reader never sees a half-written file.
        temp = self.count_file + ".tmp"
        with open(temp, "w") as handle:
            handle.write(str(self.counter))
        os.replace(temp, self.count_file)

    def finish_request(self, request, client_address):
        # The handshake runs here, in the connection's own thread, rather than in accept() on the
        # listening thread: a failed or stalled handshake then affects that connection only.
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
    parser.add_argument("--count-file", required=True, help="where the request count is kept")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])

    server = TlsTokenServer(context, args.count_file)
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
