"""A local Ray instance as clf starts it (`clf serve`, `clf tune`): bound to loopback, no dashboard server, stop
signals deferred while ray.init runs, and nothing left running after ray.shutdown.

Ground module: ray is imported inside the functions only (clf without the Ray extras, and `clf --help`, never load
it), and nothing of clf above the ground floor. What loopback takes in Ray 2.60 (tests/test_serve_ray.py and
tests/test_tune_cli.py list every listening socket of the process tree):
- ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment before ray is imported (ray reads it at import, and
  every Ray process inherits it): the node address is then 127.0.0.1, and the GCS, the raylet, the object
  manager, every worker's gRPC server, the dashboard agent and the runtime-env agent listen on loopback.
  ``_node_ip_address="127.0.0.1"`` alone does not do it: ray.init turns a loopback node address into the machine's
  network address, and the servers then bind every interface.
- ``include_dashboard=False``, and no dashboard server process at all: Ray 2.60 still starts one (dashboard.py on
  8265) for that flag; clf skips it (``without_dashboard_server``). The raylet's dashboard agent stays: the raylet
  refuses to start without one.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from clf.config.base import is_loopback_host  # noqa: F401 (serve and tune check --host with it)
from clf.errors import ClfError, Terminated, one_line
from clf.stop_signals import stop_signals_handled

logger = logging.getLogger(__name__)

LOOPBACK_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # node address = 127.0.0.1: Ray's servers bind loopback
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage report leaves the machine
}


def use_loopback(extra_env: dict[str, str] | None = None) -> Any:
    """Set LOOPBACK_ENV (and `extra_env`) before ray is imported, import it, and return the ray module.

    Ray imported earlier in this process (a library user's session) read the variable too early: its constant is
    set too.
    """
    os.environ.update({**LOOPBACK_ENV, **(extra_env or {})})
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False
    return ray


CONNECT_TIMEOUT_S = 5.0  # to open a TCP connection to a cluster's --address before ray.init


def check_cluster_answers(address: str) -> None:
    """--address HOST:PORT or ray://HOST:PORT: something must accept a connection there (auto and other forms are
    left to ray.init). ray.init waits on an address where nothing listens for more than 10 minutes (Ray 2.60), with
    the stop signals deferred meanwhile.

    Raises:
        ClfError: the host does not resolve, or nothing accepts a connection on that port.
    """
    host, _, port = address.strip().removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or one_line(exc) or type(exc).__name__
        raise ClfError(f"--address {address}: nothing answers at {host}:{port} ({reason}); check the address "
                       "(ray://HOST:10001 from outside the cluster, auto on one of its nodes)") from None


def start_ray(ray: Any, address: str | None, num_cpus: int) -> None:
    """A local Ray instance (no dashboard, loopback: call use_loopback first), or a connection to the cluster at
    `address`. A stop signal meanwhile takes effect once ray.init has returned (see stop_signals_deferred).

    Raises:
        ClfError: Ray did not start, or the cluster cannot be reached.
    """
    if address is not None:
        check_cluster_answers(address)
    try:
        with stop_signals_deferred():
            if address is None:
                with without_dashboard_server():
                    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray's connection and start-up errors share no base class
        if address is None:
            raise ClfError(f"cannot start a local Ray instance ({one_line(exc)}); see /tmp/ray for its logs") from None
        raise ClfError(f"--address {address}: cannot reach the Ray cluster ({one_line(exc)}); check the "
                       "address (ray://HOST:10001 from outside the cluster, auto on one of its nodes)") from None


def shutdown_ray(ray: Any) -> None:
    """ray.shutdown with SIGTERM and SIGINT ignored: a second Ctrl-C must not leave Ray half down."""
    if not ray.is_initialized():
        return
    with stop_signals_handled(signal.SIG_IGN):
        ray.shutdown()


@contextmanager
def stop_signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM noted, not acted on, while ray.init runs; acted on with clf's handlers once it returns.

    Interrupted, ray.init leaves its processes running (the dashboard and runtime-env agents) or the interpreter
    crashes on the way out (SIGSEGV, SIGABRT in Ray's core worker); and it installs SIGTERM handlers of its own
    (sys.exit(15), a node clean-up that exits 1), kept out here. Once ray.init has returned, the signal raises as
    usual (KeyboardInterrupt, Terminated) and the caller's clean-up stops everything Ray started: exit 130 / 143,
    nothing left. A second signal acts at once (a cluster that does not answer can hold ray.init for long): the
    user chose not to wait. A signal the parent set to be ignored stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    saved: dict[int, Any] = {}  # the handlers from before, filled before note_or_force can run

    def note_or_force(signum: int, frame: Any) -> None:
        received.append(signum)
        if len(received) > 1:
            _act_on_stop_signal(signum, saved[signum])
        logger.info("stopping once Ray has started (a few seconds); again to stop at once")

    try:
        with stop_signals_handled(note_or_force, saved), _without_ray_sigterm_handlers():
            yield
    finally:
        if len(received) == 1:  # (a second one has acted already)
            _act_on_stop_signal(received[0], saved[received[0]])


@contextmanager
def _without_ray_sigterm_handlers() -> Iterator[None]:
    """ray.init's SIGTERM handlers (sys.exit(15), a node clean-up that exits 1) not installed: clf's stays."""
    from ray._private import utils as ray_utils

    set_sigterm_handler = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = set_sigterm_handler


def _act_on_stop_signal(signum: int, handler: Any) -> None:
    """What the signal would have done had it not waited: clf's handler, or a clean stop where none was set."""
    if callable(handler):
        handler(signum, None)  # clf's SIGTERM handler raises Terminated, Python's SIGINT one KeyboardInterrupt
        return
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextmanager
def without_dashboard_server() -> Iterator[None]:
    """ray.init(include_dashboard=False) still starts Ray's dashboard server (dashboard.py on 8265, with only its
    usage-stats module, which LOOPBACK_ENV turns off): clf needs none of it, so the head node skips it. Nothing in
    Ray, Serve or Tune reads it (the job and state APIs are its only users), and the raylet's own dashboard agent is
    untouched."""
    from ray._private import node as ray_node

    start_api_server = ray_node.Node.start_api_server
    ray_node.Node.start_api_server = lambda self, **kwargs: None
    try:
        yield
    finally:
        ray_node.Node.start_api_server = start_api_server
