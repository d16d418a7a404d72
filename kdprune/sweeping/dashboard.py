"""`kdprune dashboard`: optuna-dashboard for any storage kdprune opens (journal files included),
on a loopback port by default. optuna-dashboard is an optional extra: `pip install -e
'.[dashboard]'` (`make dashboard` installs it when missing)."""

from __future__ import annotations

import signal
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from kdprune.errors import ConfigError
from kdprune.paths import journal_file, sqlite_file
from kdprune.sweeping.constraints import feasible_best_storage
from kdprune.sweeping.storage import close_storage, open_storage, redacted

INSTALL = "pip install -e '.[dashboard]' (or run make dashboard)"


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # one line per request is noise
        pass


def serve(storage_url: str, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the dashboard until interrupted; the first line printed names its address."""
    try:
        import optuna_dashboard
    except ImportError:
        raise ConfigError(f"optuna-dashboard is not installed: {INSTALL}") from None
    for path in (sqlite_file(storage_url), journal_file(storage_url)):
        if path is not None and not path.is_file():
            raise ConfigError(f"no study file {path}: run a sweep first")
    storage = feasible_best_storage(open_storage(storage_url))
    try:
        server = make_server(
            host, port, optuna_dashboard.wsgi(storage), handler_class=_QuietHandler
        )
    except OSError as err:
        close_storage(storage)
        raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    # The server runs in a thread; this one waits for Ctrl-C or SIGTERM, then stops it cleanly
    # (an exception raised inside a request would be swallowed by wsgiref's error handling).
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    threading.Thread(target=server.serve_forever, name="dashboard", daemon=True).start()
    print(
        f"optuna-dashboard: {redacted(storage_url)} at http://{host}:{server.server_port}/ "
        "(Ctrl-C or SIGTERM stops it)",
        flush=True,
    )
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
        close_storage(storage)
