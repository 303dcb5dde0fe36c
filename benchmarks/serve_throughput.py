"""`clf serve` throughput: N concurrent HTTP clients against the server vs the in-process Predictor.

For each model (resnet18 at 224 px, the own cnn at 64 px; random-init weights exported with clf metadata, the JPEGs of
256-512 px: both made once under benchmarks/_data/ by benchmarks/infer_throughput.py's helpers), on this machine:
  (s) `clf serve MODEL` started as a user starts it (local Ray, loopback), then --clients threads, each with its own
      keep-alive connection, POSTing raw JPEG bytes to /predict one after another, for --requests requests or
      --duration seconds, whichever ends first (after a warm-up); requests/s, p50 and p99 latency;
  (p) the in-process Predictor (what `clf infer` runs) on the same encoded JPEG bytes, batch --batch-size, every core,
      one pass right before and one right after each load test (their mean), while the idle server waits;
then s/p. Targets on 2 cores, clients on the same machine: s/p >= 0.8 at 16 clients for resnet18@224, >= 0.5 for
cnn@64. Every server answer is checked to be a prediction (status 200, a label), every client and server is bounded in
count and time, and nothing leaves loopback.

    python benchmarks/serve_throughput.py                                  # both models, 16 clients
    python benchmarks/serve_throughput.py --models resnet18 --clients 1,4,16 --max-batch-size 8 --batch-wait-ms 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))  # the free-port rule the live serve tests use

from infer_throughput import MODELS, ensure_model, image_set  # noqa: E402
from proc_helpers import free_port  # noqa: E402

from clf.serve.predictor import Predictor  # noqa: E402
from clf.system import usable_cpus  # noqa: E402

READY_TIMEOUT_S = 180


# ---- (p) in-process ----


class InProcess:
    """The in-process Predictor (what `clf infer` runs) on the encoded bytes: decode + Preprocess + session.run."""

    def __init__(self, model_path: Path, images: list[bytes], args: argparse.Namespace) -> None:
        self.predictor = Predictor(model_path, device="cpu", batch_size=args.batch_size, threads=usable_cpus())
        self.images = images
        self.predictor.predict(images[: args.batch_size])  # warm-up: first-run allocations

    def rate(self) -> float:
        """Images/s of one pass over the images."""
        start = time.perf_counter()
        result = self.predictor.predict(self.images)
        assert len(result) == len(self.images), result.failures[:3]
        return len(result) / (time.perf_counter() - start)


# ---- (s) the server ----


def start_server(model_path: Path, port: int, log: Path, args: argparse.Namespace) -> subprocess.Popen:
    command = [sys.executable, "-m", "clf", "serve", str(model_path), "--port", str(port), "--device", "cpu",
               "--replicas", str(args.replicas), "--max-batch-size", str(args.max_batch_size),
               "--batch-wait-ms", str(args.batch_wait_ms)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True, cwd=REPO)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"clf serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ready")
            if connection.getresponse().status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.5)
    stop_server(server)
    raise SystemExit(f"clf serve not ready within {READY_TIMEOUT_S} s:\n{log.read_text()}")


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def load_test(port: int, images: list[bytes], clients: int, args: argparse.Namespace) -> dict[str, float]:
    """A warm-up (connections, first batches), then the measurement: requests/s, p50 and p99 latency (ms)."""
    drive(port, images, clients, min(args.requests, 4 * clients), args.duration)
    latencies, seconds = drive(port, images, clients, args.requests, args.duration)
    latencies.sort()
    return {"requests": len(latencies), "rate": len(latencies) / seconds,
            "p50": 1000 * latencies[len(latencies) // 2],
            "p99": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def drive(port: int, images: list[bytes], clients: int, requests: int, duration: float) -> tuple[list[float], float]:
    """`clients` threads, one keep-alive connection each, until `requests` answers or `duration` seconds.

    Returns:
        (the latency of every request in seconds, the wall time of the whole run).
    """
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    budget = iter(range(requests))
    deadline = time.monotonic() + duration

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        i = offset
        while time.monotonic() < deadline:
            with lock:
                if next(budget, None) is None:
                    return
            body = images[i % len(images)]
            i += clients
            start = time.perf_counter()
            connection.request("POST", "/predict", body=body, headers={"Content-Type": "image/jpeg"})
            response = connection.getresponse()
            answer = response.read()
            elapsed = time.perf_counter() - start
            with lock:
                if response.status != 200 or "label" not in json.loads(answer):
                    errors.append(f"{response.status} {answer[:200]!r}")
                latencies.append(elapsed)
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} failed requests, first: {errors[0]}")
    return latencies, seconds


def bench_model(arch: str, args: argparse.Namespace) -> list[dict]:
    """Each load test sits between two in-process passes (on a shared machine a slow spell hits both sides)."""
    size, _ = MODELS[arch]
    data = Path(args.data)
    _, paths = image_set(data, args.images)
    _, model_path, _ = ensure_model(data, arch, size, fp16=False)
    images = [Path(p).read_bytes() for p in paths]
    in_process = InProcess(model_path, images, args)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        started = time.perf_counter()
        server = start_server(model_path, port, Path(tmp) / "server.log", args)
        print(f"  {arch}@{size}: clf serve ready in {time.perf_counter() - started:.1f} s", flush=True)
        try:
            for clients in args.clients:
                before = in_process.rate()
                result = load_test(port, images, clients, args)
                reference = statistics.mean([before, in_process.rate()])
                rows.append({"model": f"{arch}@{size}", "clients": clients, **result, "in_process": reference,
                             "ratio": result["rate"] / reference})
                print(f"  {arch}@{size}, {clients} clients: {result['rate']:.1f} req/s, p50 {result['p50']:.0f} ms, "
                      f"p99 {result['p99']:.0f} ms; in-process {reference:.1f} img/s", flush=True)
        finally:
            stop_server(server)
    return rows


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    import onnxruntime
    import ray

    print()
    routing = "HTTP straight into the replica" if args.replicas == 1 else "HTTP through Serve's proxy"
    print(f"clf serve vs in-process Predictor; {usable_cpus()} usable cores; Ray {ray.__version__}, onnxruntime "
          f"{onnxruntime.__version__}; {args.replicas} replica(s) ({routing}), --threads {args.threads or 'auto'}, "
          f"--max-batch-size {args.max_batch_size}, --batch-wait-ms {args.batch_wait_ms:g}; {args.images} JPEGs")
    header = ("model", "clients", "requests", "serve req/s", "p50 ms", "p99 ms", "in-process img/s", "serve/in-process")
    lines = [header] + [(r["model"], str(r["clients"]), str(r["requests"]), f"{r['rate']:.1f}", f"{r['p50']:.0f}",
                         f"{r['p99']:.0f}", f"{r['in_process']:.1f}", f"{r['ratio']:.2f}") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for n, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
    print("targets: serve/in-process >= 0.8 at 16 clients for resnet18@224, >= 0.5 for cnn@64")


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The `clf serve` settings and the cache folder, shared with serve_soak.py."""
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads per replica (0: clf's default)")
    parser.add_argument("--data", default=str(HERE / "_data"), help="cache folder for images and models")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,cnn", help="comma-separated: resnet18, cnn")
    parser.add_argument("--clients", default="16", help="concurrent clients, comma-separated: 1,4,16")
    parser.add_argument("--requests", type=int, default=600, help="requests per measurement, at most")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per measurement, at most")
    parser.add_argument("--images", type=int, default=200, help="distinct JPEGs, cycled")
    parser.add_argument("--batch-size", type=int, default=32, help="in-process batch size")
    add_server_arguments(parser)
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    rows = []
    for arch in [m.strip() for m in args.models.split(",") if m.strip()]:
        if arch not in MODELS:
            parser.error(f"unknown model {arch!r}; choose from {', '.join(MODELS)}")
        rows += bench_model(arch, args)
    print_table(rows, args)


if __name__ == "__main__":
    main()
