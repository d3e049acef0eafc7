"""The app served on a background thread of this process, on a free port: for tests, notebooks and embedding.

``LiveServer(app).start()`` returns once the port accepts connections; ``url`` is its base; ``stop`` shuts it down.
The service behind the app (its worker, its store) is the caller's to start and close. This module must never
pick a port that another process holds (the OS assigns it) and never outlive the process (daemon thread).
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class LiveServer:
    """uvicorn on ``host`` and an OS-assigned port, in a daemon thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        self.host = host
        # Bound here to port 0 and handed to uvicorn: the OS picks a free port and nobody can take it meanwhile.
        self._socket = socket.socket()
        self._socket.bind((host, 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} did not start within {timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
