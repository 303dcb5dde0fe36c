"""`clf serve` soak: many clients, a share of corrupt images, then a stop; what must hold, measured.

On loopback only, bounded in count and time: `clf serve` (the own cnn at 64 px, random-init weights exported with
clf metadata, the JPEGs of benchmarks/infer_throughput.py) started as a user starts it, then --clients threads, each
with its own keep-alive connection, POSTing raw bytes to /predict until --requests answers or --duration seconds.
A seeded --corrupt share of the requests carry a broken image (truncated JPEG, JPEG header over garbage, text).
Reported:
  - requests/s, p50 and p99 latency (ms);
  - wrong labels: answers that differ from the in-process Predictor's label for the same bytes (what `clf infer`
    computes), or a good image not answered 200;
  - corrupt images answered 400 with the one-line JSON error, out of those sent;
  - RSS of the server's whole process tree (its session: clf, Ray's processes, the replica) after a warm-up and
    after the soak;
  - SIGTERM: the exit code (143 expected) and any process of the server's session left after it.
Reference (issue 24, 2 cores): 197 req/s, p50 78 ms, p99 149 ms; 0 wrong labels; 144/144 corrupt answered 400;
RSS 1405 -> 1414 MB; SIGTERM exit 143, nothing left.

    python benchmarks/serve_soak.py
    python benchmarks/serve_soak.py --requests 600 --clients 4 --corrupt 0.1
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

from infer_throughput import MODELS, ensure_model, image_set  # noqa: E402
from serve_throughput import add_server_arguments, free_port, start_server  # noqa: E402

from clf.serve.http_api import prediction  # noqa: E402
from clf.serve.predictor import Predictor, usable_cpus  # noqa: E402

ARCH = "cnn"
WARM_UP_REQUESTS = 160
STOP_TIMEOUT_S = 60
UNREADABLE = {"error": "image: not a readable image (corrupt, truncated or unsupported format)"}


@dataclass
class Job:
    """One request: its body, and the label the server must answer (None: a corrupt image, 400 expected)."""

    body: bytes
    expected: str | None


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    corrupt_sent: int = 0
    corrupt_400: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


# ---- the requests and the answers they must get ----


def corrupt_variants(jpeg: bytes) -> list[bytes]:
    """The broken uploads users send: a truncated JPEG, a JPEG header over garbage, a text file."""
    return [jpeg[: max(64, len(jpeg) // 8)], b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50, b"my notes, not a picture\n"]


def make_jobs(images: list[bytes], labels: list[str], args: argparse.Namespace) -> list[Job]:
    """args.requests jobs cycling over the images; a seeded args.corrupt share replaced by corrupt bodies."""
    rng = np.random.default_rng(args.seed)
    corrupt = set(rng.choice(args.requests, size=round(args.corrupt * args.requests), replace=False).tolist())
    jobs = []
    for i in range(args.requests):
        k = i % len(images)
        if i in corrupt:
            variants = corrupt_variants(images[k])
            jobs.append(Job(variants[i % len(variants)], None))
        else:
            jobs.append(Job(images[k], labels[k]))
    return jobs


def in_process_labels(model_path: Path, images: list[bytes], corrupt: list[bytes]) -> list[str]:
    """The label of each image as the in-process Predictor (`clf infer`) gives it; the corrupt bodies must fail there
    too (else 400 would be the wrong answer)."""
    predictor = Predictor(model_path, device="cpu", threads=usable_cpus())
    result = predictor.predict(images)
    assert len(result) == len(images), result.failures[:3]
    labels = [prediction(row, result.classes, 1)["label"] for row in result.logits]
    logging.getLogger("clf").setLevel(logging.ERROR)  # its "skipped" line per corrupt body: expected here
    broken = predictor.predict(corrupt)
    assert len(broken) == 0, f"{len(broken)} of the corrupt bodies decode in-process"
    return labels


# ---- the load ----


def soak(port: int, jobs: list[Job], clients: int, duration: float, tally: Tally) -> float:
    """`clients` threads, one keep-alive connection each, over the jobs in order until done or `duration` s.

    Returns:
        the wall time of the run in seconds.
    """
    cursor = iter(range(len(jobs)))
    deadline = time.monotonic() + duration

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            while time.monotonic() < deadline:
                with tally.lock:
                    index = next(cursor, None)
                if index is None:
                    return
                send(connection, jobs[index], tally)
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def send(connection: http.client.HTTPConnection, job: Job, tally: Tally) -> None:
    start = time.perf_counter()
    connection.request("POST", "/predict?topk=1", body=job.body, headers={"Content-Type": "image/jpeg"})
    response = connection.getresponse()
    answer = response.read()
    elapsed = time.perf_counter() - start
    try:
        parsed = json.loads(answer)
    except ValueError:
        parsed = answer[:200]
    with tally.lock:
        tally.latencies.append(elapsed)
        if job.expected is None:
            tally.corrupt_sent += 1
            tally.corrupt_400 += response.status == 400 and parsed == UNREADABLE
        elif response.status != 200 or parsed.get("label") != job.expected:
            tally.wrong.append(f"{response.status} {parsed!r} (expected {job.expected})")


# ---- the server's processes ----


def session_processes(session: int) -> list[int]:
    """Live processes of the session the server leads (Ray's processes stay in it; see tests/test_serve_ray.py)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def tree_rss_mb(session: int) -> float:
    total_kb = 0
    for pid in session_processes(session):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


def stop(server: subprocess.Popen) -> tuple[int | str, list[str]]:
    """SIGTERM, then (exit code, command lines of the session's processes still alive after a grace period)."""
    server.send_signal(signal.SIGTERM)
    try:
        code: int | str = server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        code = f"none within {STOP_TIMEOUT_S} s"
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (left := session_processes(server.pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    names = []
    for pid in left:
        try:
            names.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:80])
        except OSError:
            continue
        try:  # a leftover of the benchmark's own server (its session): not left running after the report
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return code, names


# ---- the run ----


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests in the soak, at most")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--corrupt", type=float, default=0.05, help="share of requests with a corrupt image")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of soak, at most")
    parser.add_argument("--images", type=int, default=200, help="distinct JPEGs, cycled")
    parser.add_argument("--seed", type=int, default=0, help="which requests are corrupt")
    add_server_arguments(parser)
    args = parser.parse_args()
    if not 0 <= args.corrupt < 1 or args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be >= 1, --corrupt in [0, 1)")

    size, _ = MODELS[ARCH]
    data = Path(args.data)
    _, paths = image_set(data, args.images)
    _, model_path, _ = ensure_model(data, ARCH, size, fp16=False)
    images = [Path(p).read_bytes() for p in paths]
    labels = in_process_labels(model_path, images, corrupt_variants(images[0]))
    jobs = make_jobs(images, labels, args)
    warm_up = make_jobs(images, labels, argparse.Namespace(**{**vars(args), "requests": WARM_UP_REQUESTS}))

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        port = free_port()
        server = start_server(model_path, port, Path(tmp) / "server.log", args)
        ready_s = time.perf_counter() - started
        try:
            soak(port, warm_up, args.clients, args.duration, Tally())
            rss_before = tree_rss_mb(server.pid)
            tally = Tally()
            seconds = soak(port, jobs, args.clients, args.duration, tally)
            rss_after = tree_rss_mb(server.pid)
        finally:
            code, left = stop(server)
    report(args, tally, seconds, ready_s, (rss_before, rss_after), code, left, len(set(labels)))


def report(args: argparse.Namespace, tally: Tally, seconds: float, ready_s: float, rss: tuple[float, float],
           code: int | str, left: list[str], distinct_labels: int) -> None:
    import onnxruntime
    import ray

    latencies = sorted(tally.latencies)
    count = len(latencies)
    p50 = 1000 * latencies[count // 2]
    p99 = 1000 * latencies[min(count - 1, int(0.99 * count))]
    print(f"clf serve soak: {ARCH}@{MODELS[ARCH][0]}, {args.clients} clients, {count} of {args.requests} requests "
          f"({args.corrupt:.0%} corrupt, seed {args.seed}) in {seconds:.1f} s; {usable_cpus()} usable cores; "
          f"Ray {ray.__version__}, onnxruntime {onnxruntime.__version__}; server ready in {ready_s:.1f} s")
    print(f"  throughput     {count / seconds:.0f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(f"  wrong labels   {len(tally.wrong)} of {count - tally.corrupt_sent} good images "
          f"({distinct_labels} distinct labels among the images)")
    for line in tally.wrong[:3]:
        print(f"                 e.g. {line}")
    print(f"  corrupt images {tally.corrupt_400}/{tally.corrupt_sent} answered 400 with the one-line JSON error")
    print(f"  RSS            {rss[0]:.0f} -> {rss[1]:.0f} MB (the server's process tree, after warm-up -> after)")
    print(f"  SIGTERM        exit {code}, {len(left)} process(es) left{': ' + '; '.join(left) if left else ''}")
    print("reference (issue 24, 2 cores): 197 req/s, p50 78 ms, p99 149 ms; 0 wrong; 144/144 corrupt 400; "
          "RSS 1405 -> 1414 MB; SIGTERM 143, nothing left")


if __name__ == "__main__":
    main()
