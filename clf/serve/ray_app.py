"""`clf serve MODEL`: the model behind Ray Serve, locally (loopback only) or on an existing Ray cluster.

Everything a user can get wrong is checked before Ray starts (seconds of start-up): the `serve` extra, the model
(clf metadata, the device), the port. Ray itself is imported only here and in clf.serve.ray_replica, so clf
without the extra, and `clf --help`, never load it.

Local mode binds every port Ray opens to loopback. What it takes, in Ray 2.60 (tests/test_serve_ray.py asserts
it by listing the listening sockets of the whole process tree):
- Ray's own processes: clf.ray_local (shared with `clf tune`): loopback environment, no dashboard server, stop
  signals deferred while ray.init runs.
- Serve's HTTP server on --host/--port: the replica's own (direct ingress, one replica) or Serve's proxy (several);
  with direct ingress the proxy, which Serve still starts, listens on --host at a port the kernel picks as it binds
  (port 0: nothing can take it first); no gRPC proxy.
- each Serve replica's inter-deployment gRPC server, hard-wired to "[::]:0": rewritten to 127.0.0.1 in the
  replica (clf.serve.ray_replica.bind_internal_grpc_to_loopback). No setting exists for it in 2.60, nor in the open
  work upstream (ray-project/ray#64544, #64623: a port range, still on [::]), hence the pinned extra.

A direct-ingress replica opens its HTTP socket without SO_REUSEADDR in 2.60 (its proxy sets SO_REUSEADDR and
SO_REUSEPORT): the replica sets both, as the proxy (clf.serve.ray_replica.reuse_direct_ingress_port), or a restart
on --port would fail while closed connections sit in TIME_WAIT. tests/test_serve_ray.py guards both rewrites, should
a Ray upgrade move what they wrap.
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import signal
import socket
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from clf.config import ServeConfig
from clf import ray_local
from clf.errors import ClfError, DataError, Terminated, one_line
from clf.serve import body_limit
from clf.serve.metadata import has_clf_metadata
from clf.serve.predictor import Predictor
from clf.serve.session import create_session
from clf.stop_signals import stop_received, stop_signals_handled
from clf.system import usable_cpus

logger = logging.getLogger(__name__)

APP_NAME = "clf"
SERVE_EXTRA_HINT = "clf serve needs the serve extra: pip install 'clf[serve]'"
LOOPBACK_ENV = {
    **ray_local.LOOPBACK_ENV,
    # the body limit in Serve's HTTP proxy itself (Serve's documented proxy callback): a chunked upload cannot
    # grow the proxy before the replica sees it
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": body_limit.CALLBACK_IMPORT_PATH,
}
# Fewer thread hops per request in the proxy and the replica, and proxy -> replica over gRPC rather than actor calls
# (+10-15 % requests/s for the cnn at 16 clients on 2 cores; benchmarks/serve_throughput.py). Defaults only: the
# environment of `clf serve` wins. Serve's "throughput optimized" preset would also move HTTP into the replica on
# ports of its own choosing; that is left off.
TUNING_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",  # the replica's work is async and runs predict in a thread
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
}

# Local mode, one replica: HTTP goes straight into the replica on --host/--port (Serve's "direct ingress"): no proxy
# hop, no second serialisation (README, "Serving over HTTP", has the measurements). Serve gives each replica a port of
# its own from a range, so several replicas need the proxy for one URL. clf owns these settings in local mode (the
# user's environment does not override them: they decide which process listens on --port).
DIRECT_INGRESS_ENV = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "0",  # HAProxy in front would take --port's place
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",  # no load balancer to wait for: stop at once
    "RAY_SERVE_PORT_QUARANTINE_S": "0",  # a replica Serve restarts takes --port again at once
}


# Ports the local Ray instance's own processes take after clf's check (Ray 2.60's defaults, the pinned extra): the
# dashboard agent listens on 52365 even without the dashboard, and workers take ports 10002-19999.
RAY_LOCAL_PORTS = {52365: "its dashboard agent"}
RAY_WORKER_PORTS = range(10002, 20000)
SERVE_EXTRA_MODULES = ("ray", "starlette", "uvicorn")  # what `ray[serve]` brings that the serving path imports


def check_serve_extra() -> None:
    """Raises ClfError (one line, exit 2) when Ray Serve is not installed.

    Looked up without importing: ray reads its environment (the loopback settings) once, at import.
    """
    if any(importlib.util.find_spec(name) is None for name in SERVE_EXTRA_MODULES):
        raise ClfError(SERVE_EXTRA_HINT)


def replica_threads(cfg: ServeConfig) -> int:
    """onnxruntime intra-op threads per replica: --threads, else this machine's usable cores shared out.

    Ray sets OMP_NUM_THREADS to the replica's CPUs (1 by default): without an explicit count onnxruntime would
    run the model on one core.
    """
    return cfg.threads or max(1, usable_cpus() // cfg.replicas)


def uses_direct_ingress(cfg: ServeConfig) -> bool:
    """HTTP straight into the replica: local mode with one replica (see DIRECT_INGRESS_ENV)."""
    return cfg.address is None and cfg.replicas == 1


def routing_env(cfg: ServeConfig) -> dict[str, str]:
    """Local mode: the Serve settings that put --port on the replica (direct ingress) or on the proxy.

    Serve hands direct-ingress ports out of [MIN, MAX): a range of exactly --port. Set whichever way they go, so a
    value left in this process's environment by an earlier `serve` call cannot leak into this one.
    """
    if not uses_direct_ingress(cfg):
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}  # HAProxy forces it on
    return {**DIRECT_INGRESS_ENV, "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(cfg.port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(cfg.port + 1)}


def check_model(cfg: ServeConfig) -> Predictor:
    """Open the model as a replica will, before Ray starts: a bad file, a model without clf metadata or an unusable
    device is one line now rather than a replica crash loop later.

    Raises:
        DataError: the model cannot be used, or has no clf metadata (a served model must carry its classes and
            preprocessing: nothing is guessed).
        DeviceError: the device asked for is not usable here.
    """
    session, _ = create_session(cfg.model, device="cpu", threads=1)  # the file and its metadata, on any host
    if not has_clf_metadata(session.get_modelmeta().custom_metadata_map):
        raise DataError(f"{cfg.model}: no clf metadata (exported by another tool?); clf serve needs the class "
                        "names and preprocessing in the model: export it with `clf export RUN --onnx`")
    del session
    return Predictor(cfg.model, device=cfg.device, threads=1, workers=1)


def check_not_rays_port(port: int) -> None:
    """Refuse a port that the local Ray instance's own processes take once they start (the proxy then fails to bind
    it, seconds later, with an error that names neither the port nor the cause)."""
    if port in RAY_LOCAL_PORTS or port in RAY_WORKER_PORTS:
        owner = RAY_LOCAL_PORTS.get(port, "its workers (ports 10002-19999)")
        raise ClfError(f"--port {port}: the local Ray instance clf serve starts uses it for {owner}; give another "
                       "--port (e.g. 8000)")


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (or a host that is not this machine's) before Ray's seconds of start-up.

    Raises:
        ClfError: the address is in use, not local, or not allowed.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ClfError(f"--host {host}: cannot resolve it ({one_line(exc)}); give an address of this machine, "
                       "e.g. 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: a TIME_WAIT port is free
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ClfError(f"--port {port}: {host}:{port} is already in use (another server?); stop it or "
                               "give another --port") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ClfError(f"--host {host}: not an address of this machine; give one of its addresses, "
                               "e.g. 127.0.0.1") from None
            if exc.errno == errno.EACCES:
                raise ClfError(f"--port {port}: not allowed for this user (ports below 1024 need root); "
                               "give a --port above 1023") from None
            raise ClfError(f"--port {port}: cannot listen on {host}:{port} ({one_line(exc)})") from None


def check_capacity(cfg: ServeConfig) -> None:
    """Local mode: --replicas and --threads within this machine's usable cores, refused before Ray starts.

    Raises:
        ClfError: more replicas (processes, each with its own model) or threads per replica than usable cores.
    """
    cores = usable_cpus()
    if cfg.replicas > cores:
        raise ClfError(f"--replicas {cfg.replicas}: more than the {cores} usable cores of this machine (each replica "
                       f"is a process with its own model); give --replicas {cores} or fewer")
    if cfg.threads > cores:
        raise ClfError(f"--threads {cfg.threads}: more than the {cores} usable cores of this machine; give --threads "
                       f"{cores} or fewer, or 0 (the usable cores / replicas)")


def check_cluster_capacity(cfg: ServeConfig, threads: int, cluster_cpus: float) -> None:
    """--address: the replicas' CPUs (each asks for its threads) within the cluster's, refused before deploying
    (Serve would otherwise wait for them forever).

    Raises:
        ClfError: replicas x threads is more CPUs than the cluster has.
    """
    needed = cfg.replicas * threads
    if needed > cluster_cpus:
        raise ClfError(f"--replicas {cfg.replicas} x {threads} thread(s) need {needed} CPUs, more than the "
                       f"{cluster_cpus:g} of the Ray cluster at {cfg.address}; give fewer --replicas or --threads")


def serve(cfg: ServeConfig, on_ready: Callable[[str, list[str], int], Any] | None = None) -> None:
    """Check everything, start (or join) Ray, deploy the model and serve until SIGTERM / Ctrl-C.

    Args:
        cfg: the checked ServeConfig.
        on_ready: called once the application answers, with its URL, the class names and the threads per replica.

    Raises:
        ClfError: the extra, the flags, the model or the port (before Ray starts); Ray failing to start or deploy.
        Terminated / KeyboardInterrupt: the stop signal, at any moment, after Serve and (local mode) Ray were shut
            down.
    """
    check_serve_extra()
    local = cfg.address is None
    if local:
        check_capacity(cfg)
    classes = check_model(cfg).classes  # the model is not kept open here: the replicas have their own
    if local:
        check_not_rays_port(cfg.port)  # first: whether Ray's own processes hold it right now or not
        check_port(cfg.host, cfg.port)
    threads = replica_threads(cfg)
    stop_if_terminated()  # before Ray's seconds of start-up
    with _ray_session(cfg, threads) as url:
        stop_if_terminated()
        if on_ready is not None:
            on_ready(url, classes, threads)
        while True:
            time.sleep(3600)  # the signal handlers raise out of here


def stop_if_terminated() -> None:
    """Raise Terminated for a SIGTERM that arrived while Python could not raise its exception (an extension module
    being imported: "Exception ignored in ..."; clf.stop_signals), rather than start and serve regardless."""
    if stop_received(signal.SIGTERM):
        raise Terminated()


@contextmanager
def _ray_session(cfg: ServeConfig, threads: int) -> Iterator[str]:
    """Ray up, the application deployed and answering; on the way out, everything that was started is stopped."""
    local = cfg.address is None
    proxy_port = cfg.port
    if local:
        for name, value in TUNING_ENV.items():
            os.environ.setdefault(name, value)
        if uses_direct_ingress(cfg):
            proxy_port = 0  # the idle proxy binds a port the kernel picks when it binds: no probe, no race
        # before ray is imported, and inherited by every Ray process
        ray_local.use_loopback({**LOOPBACK_ENV, **routing_env(cfg)})
    import ray
    from ray import serve as ray_serve

    stop_if_terminated()  # a SIGTERM swallowed while Ray's extension modules were imported
    if not logger.isEnabledFor(logging.DEBUG):  # clf prints its own ready line; Serve's INFO lines only with -v
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    deploying = deployed = False
    try:
        _start_ray(ray, cfg)
        if not local:
            check_cluster_capacity(cfg, threads, float(ray.cluster_resources().get("CPU", 0.0)))
        deploying = True
        _deploy(ray_serve, cfg, threads, proxy_port)
        deployed = True
        yield f"http://{_url_host(cfg.host)}:{cfg.port}"
    finally:
        _shutdown(ray, ray_serve, local, deploying, deployed)


def _start_ray(ray: Any, cfg: ServeConfig) -> None:
    """A local Ray instance (no dashboard, loopback: LOOPBACK_ENV), or a connection to the cluster at --address."""
    ray_local.start_ray(ray, cfg.address, usable_cpus())


def _deploy(ray_serve: Any, cfg: ServeConfig, threads: int, proxy_port: int) -> None:
    """The proxy on `proxy_port` (--port, or 0 when the replica takes --port), then the application."""
    try:
        ray_serve.start(http_options={"host": cfg.host, "port": proxy_port}, proxy_location="HeadOnly",
                        logging_config={"log_level": "WARNING"})
        ray_serve.run(_application(cfg, threads), name=APP_NAME, route_prefix="/", blocking=False)
    except Exception as exc:  # noqa: BLE001 - a replica that fails to start, Serve's own errors
        if uses_direct_ingress(cfg) and "port" in str(exc).lower():  # "No available ports on node ...": another
            check_port(cfg.host, cfg.port)  # process took --port during Ray's start-up; say so, not Serve's words
        raise ClfError(f"{cfg.model}: Ray Serve could not deploy it ({one_line(exc)}); "
                       "see Ray's logs under /tmp/ray/session_latest/logs") from None


def _application(cfg: ServeConfig, threads: int) -> Any:
    from ray import serve as ray_serve

    from clf.serve.ray_replica import ClfReplica

    local = cfg.address is None
    # Local: the replicas share this machine's cores. A cluster: each replica asks for the cores it will use.
    num_cpus = usable_cpus() / cfg.replicas if local else float(threads)
    deployment = ray_serve.deployment(
        ClfReplica, name="ClfReplica", num_replicas=cfg.replicas,
        # enough requests in flight per replica to fill two batches: Serve's default (5) would cap every batch at 5
        max_ongoing_requests=max(100, 2 * cfg.max_batch_size),
        ray_actor_options={"num_cpus": num_cpus},
        logging_config={"log_level": "WARNING", "enable_access_log": False},  # no log line per request
    )
    return deployment.bind(os.path.abspath(cfg.model), cfg.device, threads, cfg.max_batch_size,
                           cfg.batch_wait_ms / 1000.0, local)


def _shutdown(ray: Any, ray_serve: Any, local: bool, deploying: bool, deployed: bool) -> None:
    """Stop what this command started; a second SIGTERM/Ctrl-C must not cut it short and leave Ray running.

    Local mode: a deployed Serve is shut down gracefully (requests in flight are answered), then Ray. Stopped while
    deploying, Serve's graceful shutdown can wait 30 s on a controller still starting: ray.shutdown alone stops
    every Ray process, Serve's included.
    """
    if not ray.is_initialized():
        return
    # SIGTERM and SIGINT ignored while Ray shuts down: a second Ctrl-C must not leave Ray half down
    with stop_signals_handled(signal.SIG_IGN):
        try:
            if local and deployed:
                ray_serve.shutdown()
            elif not local and deploying:  # the cluster and its Serve belong to someone else: only remove this app
                ray_serve.delete(APP_NAME)
        except Exception as exc:  # noqa: BLE001 - shutting down must reach ray.shutdown whatever Serve says
            logger.warning("Ray Serve did not shut down cleanly: %s", one_line(exc))
        ray.shutdown()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
