"""A hostile (or just unlucky) web server on 127.0.0.1 for the tests of remote reads, in a thread of the test process.

It serves a folder (``GET`` and ``HEAD``, query strings and user information ignored, as a real server would), and,
whatever the folder holds, these paths:

- ``/status/NNN/...``: answers HTTP status NNN (401, 403, 404, 500...);
- ``/trickle/...``: answers 200 and then one byte every 50 ms, until the test stops it;
- ``/huge/N/...``: answers 200 with N bytes of ``a`` (ignoring any Range header), whatever the name.

Every request's path, query and ``Authorization`` header are recorded (``requests``), so a test can see that the
secret it planted did reach the server (and nowhere else). :meth:`stop` ends the trickles and the server.
"""
from __future__ import annotations

import http.server
import re
import threading
import time
from pathlib import Path


class HostileServer:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.requests: list[tuple[str, str]] = []
        self.stopping = threading.Event()
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(server.folder), **kwargs)

            def log_message(self, *args):  # quiet
                pass

            def _special(self) -> bool:
                server.requests.append((self.path, self.headers.get("Authorization", "")))
                path = self.path.split("?", 1)[0]
                if match := re.match(r"/status/(\d{3})/", path):
                    self.send_error(int(match[1]))
                    return True
                if path.startswith("/trickle/"):
                    self.send_response(200)  # no length: the body goes on until the connection closes
                    self.end_headers()
                    if self.command == "GET":
                        while not server.stopping.is_set():
                            try:
                                self.wfile.write(b"a")
                                self.wfile.flush()
                            except OSError:
                                return True
                            time.sleep(0.05)
                    return True
                if match := re.match(r"/huge/(\d+)/", path):
                    size = int(match[1])
                    self.send_response(200)
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    if self.command == "GET":
                        chunk = b"a" * min(size, 1 << 20)
                        try:
                            for start in range(0, size, len(chunk)):
                                self.wfile.write(chunk[: size - start])
                        except OSError:
                            pass
                    return True
                return False

            def do_GET(self):
                if not self._special():
                    super().do_GET()

            def do_HEAD(self):
                if not self._special():
                    super().do_HEAD()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="hostile-server", daemon=True)

    def start(self) -> "HostileServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> "HostileServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
