#!/usr/bin/env python3
"""A tiny HTTPS token endpoint for tests/it/tls.rs (python3 standard library only).

Usage: server.py --cert leaf.pem --key leaf.key --count-file PATH
                 [--client-ca ca.pem] [--clients-file PATH] [--bodies-file PATH]

Binds 127.0.0.1 on a free port, prints `LISTENING <port>` on stdout, then serves:
POST /token answers a Bearer token `tls-token-<n>` and writes n, the number of token requests
served so far, to the count file; any other request is a 404. The count file is the test's proof of
whether a request (and so a credential) ever reached the server: it starts at 0 and changes only
after a complete HTTP request arrived over an established TLS session.

Mutual TLS: with `--client-ca`, every handshake must present a client certificate that chains to
that CA (`ssl.CERT_REQUIRED`); a client without one, or with another CA's, fails the handshake
(reported as below), so no HTTP request of it is ever read. Without the flag no client
certificate is asked for, as before.

Optional records, one line per served token request, `<n>` being the number the request got (the
one in `tls-token-<n>`), each file rewritten whole through a rename and before the count file, so
a reader that saw count n finds lines 1..n complete:
- `--clients-file`: `<n> <CN>`, the subject common name of the client certificate the connection
  presented, or `<n> -` when it presented none.
- `--bodies-file`: `<n> <name> <name>...`, the names (never the values) of the form fields of the
  request body in the order sent, or `<n>` alone for an empty body.
Both files start empty (created at start-up) when their flag is given.

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
import urllib.parse


class TokenHandler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 with an explicit Content-Length, as real token endpoints answer.
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        # Read the body first: answering before it is consumed can reset the connection.
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path != "/token":
            self._reply(404, {"error": "not_found"})
            return
        counter = self.server.count_request(self._client_cn(), _field_names(body))
        self._reply(
            200,
            {
                "access_token": f"tls-token-{counter}",
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )

    def _client_cn(self):
        # Filled in only for a certificate that was asked for and verified (`--client-ca`).
        peer = self.connection.getpeercert() or {}
        for rdn in peer.get("subject", ()):
            for name, value in rdn:
                if name == "commonName":
                    return value
        return "-"

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


def _field_names(body):
    """The names of the form fields in an `application/x-www-form-urlencoded` body."""
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    return [name for name, _ in pairs]


def _write_whole(path, text):
    # Through a rename, so a reader never sees a half-written file.
    temp = path + ".tmp"
    with open(temp, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


class TlsTokenServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context, count_file, clients_file=None, bodies_file=None):
        self.context = context
        self.count_file = count_file
        self.counter = 0
        self.lock = threading.Lock()
        # Each optional record: its path and its lines so far.
        self.records = [(path, []) for path in (clients_file, bodies_file)]
        for path, lines in self.records:
            if path:
                _write_whole(path, "")
        self._write_count()
        super().__init__(("127.0.0.1", 0), TokenHandler)

    def count_request(self, client_cn, field_names):
        with self.lock:
            self.counter += 1
            entries = (client_cn, " ".join(field_names))
            for (path, lines), entry in zip(self.records, entries):
                if path:
                    lines.append(f"{self.counter} {entry}".rstrip() + "\n")
                    _write_whole(path, "".join(lines))
            self._write_count()
            return self.counter

    def _write_count(self):
        _write_whole(self.count_file, str(self.counter))

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
    parser.add_argument("--client-ca", help="require client certificates signed by this CA (PEM)")
    parser.add_argument("--clients-file", help="where each request's client certificate CN goes")
    parser.add_argument("--bodies-file", help="where each request's form field names go")
    args = parser.parse_args()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])
    if args.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=args.client_ca)

    server = TlsTokenServer(context, args.count_file, args.clients_file, args.bodies_file)
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    print(f"LISTENING {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
