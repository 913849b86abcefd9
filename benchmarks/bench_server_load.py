"""`edgevl serve` under a bounded hostile load, on loopback: status codes, latency percentiles and peak memory.

    .venv/bin/python benchmarks/bench_server_load.py                      # 8 clients, 400 requests, at most 120 s
    .venv/bin/python benchmarks/bench_server_load.py --clients 32 --requests 2000 --seconds 300
    .venv/bin/python benchmarks/bench_server_load.py --worst-case         # peak memory of single requests at the limits

The server is a real `edgevl serve` (the embedded OCR engine, default limits) in a subprocess. N client threads
send requests until `--requests` have been sent or `--seconds` have passed, each drawing its next one at random
(seeded) from four kinds:
- good: OCR of a small screenshot, streamed or not;
- bad: malformed JSON, text/plain, a foreign Host, bad base64, out-of-range fields, a deeply nested body;
- oversized: a pixel bomb, too many images, too many pixels together, a body over the size limit;
- abandoned: the client hangs up before its headers are complete, in the middle of its body, or while its
  request waits for the model.
At the end every slot must be free again (/health). Peak memory is the server's VmHWM (Linux).

`--worst-case` starts a fresh server per case and sends one request at the default limits: the peak RSS over
the idle server is what one request can cost (README, "Server limits").
Results: a table and bench-out/server-load.json.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import random
import socket
import statistics
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from collections.abc import Callable

import httpx
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
KINDS = {"good": 0.4, "bad": 0.25, "oversized": 0.15, "abandoned": 0.2}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--requests", type=int, default=400, help="requests in all (default 400)")
    parser.add_argument("--seconds", type=float, default=120, help="stop sending after this long (default 120)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worst-case", action="store_true", help="measure single requests at the limits instead")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out")
    return parser.parse_args()


# ---- what the clients send ----------------------------------------------------------------------------------------

def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def screenshot() -> bytes:
    image = Image.new("RGB", (320, 64), "white")
    ImageDraw.Draw(image).text((10, 20), "Invoice 2024-118  Total 1,234.50", fill="black")
    return png(image)


def body(*images: bytes, text: str | None = None, **fields) -> dict:
    content = [{"type": "image_url", "image_url": {"url": data_uri(image)}} for image in images]
    if text is not None:
        content.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": content}], "edgevl_task": "ocr", **fields}


class Payloads:
    """Every request body, built once (the clients only send)."""

    def __init__(self) -> None:
        shot = screenshot()
        sixteen_mp = png(Image.new("1", (4000, 4000), 1))
        self.good = [json.dumps(body(shot)).encode(), json.dumps(body(shot, stream=True)).encode()]
        self.bad: list[tuple[bytes, dict[str, str]]] = [
            (b"{nope", {}),
            (self.good[0], {"Content-Type": "text/plain"}),
            (self.good[0], {"Host": "attacker.example"}),
            (json.dumps({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}]}).encode(), {}),
            (json.dumps(body(shot, max_tokens=-5)).encode(), {}),
            (json.dumps(body(shot, temperature=9)).encode(), {}),
            (json.dumps(body(shot, edgevl_task="caption")).encode(), {}),
            (b"[" * 100_000 + b"]" * 100_000, {}),
            (json.dumps({"messages": "hi"}).encode(), {}),
        ]
        self.oversized = [
            json.dumps(body(png(Image.new("1", (12000, 12000))))).encode(),  # 144 MP in one image
            json.dumps(body(*[shot] * 17)).encode(),  # more than 16 images
            json.dumps(body(*[sixteen_mp] * 8)).encode(),  # the 8 x 16 MP in a few kB
            b'{"messages": "' + b"x" * 51_000_000 + b'"}',  # over the 50 MB body limit
        ]


# ---- one client ---------------------------------------------------------------------------------------------------

class Client:
    def __init__(self, url: str, payloads: Payloads, rng: random.Random) -> None:
        self.url, self.payloads, self.rng = url, payloads, rng
        self.host, self.port = url.removeprefix("http://").removesuffix("/v1").split(":")
        self.http = httpx.Client(timeout=300)

    def send(self, kind: str) -> tuple[str, float]:
        """(outcome, seconds): the status code, or what the client did instead of waiting for one."""
        started = time.perf_counter()
        outcome = {"good": self._good, "bad": self._bad, "oversized": self._oversized,
                   "abandoned": self._abandoned}[kind]()
        return outcome, time.perf_counter() - started

    def _post(self, content: bytes, headers: dict[str, str] | None = None) -> str:
        headers = {"Content-Type": "application/json", **(headers or {})}
        with self.http.stream("POST", f"{self.url}/chat/completions", content=content, headers=headers) as response:
            for _ in response.iter_bytes():
                pass
            return str(response.status_code)

    def _good(self) -> str:
        return self._post(self.rng.choice(self.payloads.good))

    def _bad(self) -> str:
        content, headers = self.rng.choice(self.payloads.bad)
        return self._post(content, headers)

    def _oversized(self) -> str:
        try:
            return self._post(self.rng.choice(self.payloads.oversized))
        except httpx.HTTPError:  # the server answered 413 and closed while the body was still being sent
            return "413 (closed while sending)"

    def _abandoned(self) -> str:
        how = self.rng.choice(["headers", "body", "waiting"])
        request = self.payloads.good[0]
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(request)}\r\n\r\n").encode()
        with socket.create_connection((self.host, int(self.port)), timeout=30) as connection:
            if how == "headers":
                connection.sendall(head[:30])
            elif how == "body":
                connection.sendall(head + request[:len(request) // 2])
            else:
                connection.sendall(head + request)
            time.sleep(self.rng.uniform(0.0, 0.2))
        return f"hung up ({how})"


# ---- running it ---------------------------------------------------------------------------------------------------

def peak_rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process in MB, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    values = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return values["VmRSS"] / 1024, values["VmHWM"] / 1024


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    ordered = sorted(seconds)

    def at(fraction: float) -> float:
        return round(1000 * ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)

    return {"n": len(ordered), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0),
            "mean_ms": round(1000 * statistics.fmean(ordered), 1)}


def run_load(args: argparse.Namespace) -> dict:
    from edgevl.testing.server import edgevl_serve_process

    payloads = Payloads()
    with edgevl_serve_process("--threads", "1") as (url, process, log_lines):
        idle_rss, _ = peak_rss_mb(process.pid)
        lock = threading.Lock()
        sent = 0
        results: dict[str, list[tuple[str, float]]] = defaultdict(list)
        deadline = time.monotonic() + args.seconds

        def client_loop(index: int) -> None:
            nonlocal sent
            rng = random.Random(args.seed * 1000 + index)
            client = Client(url, payloads, rng)
            while time.monotonic() < deadline:
                with lock:
                    if sent >= args.requests:
                        return
                    sent += 1
                kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
                try:
                    outcome = client.send(kind)
                except httpx.HTTPError as error:
                    outcome = (f"client error: {type(error).__name__}", 0.0)
                with lock:
                    results[kind].append(outcome)

        started = time.monotonic()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client_loop, range(args.clients)))
        elapsed = time.monotonic() - started
        health = _settled_health(url)
        rss, peak = peak_rss_mb(process.pid)
        lines = list(log_lines)
    return {
        "clients": args.clients, "requests": sum(len(v) for v in results.values()), "seconds": round(elapsed, 1),
        "outcomes": {kind: dict(Counter(outcome for outcome, _ in results[kind])) for kind in KINDS},
        "latency": {kind: percentiles([s for outcome, s in results[kind] if outcome[:1].isdigit()]) for kind in KINDS},
        "server": {"idle_rss_mb": round(idle_rss, 1), "end_rss_mb": round(rss, 1), "peak_rss_mb": round(peak, 1),
                   "requests_held_at_end": health["requests"], "log_lines": len(lines),
                   "tracebacks_in_log": sum("Traceback" in line for line in lines)},
    }


def _settled_health(url: str) -> dict:
    """/health once the last abandoned connections have been noticed (they free their slots within a second)."""
    deadline = time.monotonic() + 15
    while True:
        health = httpx.get(url.removesuffix("/v1") + "/health", timeout=30).json()
        if health["requests"] == 0 or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


WORST_CASES: dict[str, Callable[[], bytes]] = {
    # one image at the per-request pixel limit (50 MP), compressed to a few hundred kB
    "one 50 MP image": lambda: json.dumps(body(png(Image.new("RGB", (7071, 7071), "white")))).encode(),
    # sixteen images, 50 MP together: the count limit and the total-pixel limit at once
    "16 images, 50 MP together":
        lambda: json.dumps(body(*[png(Image.new("RGB", (1767, 1767), "white"))] * 16)).encode(),
    # a body just under the 50 MB limit, mostly text, with a small image
    "49 MB body": lambda: json.dumps(body(screenshot(), text="x" * 49_000_000)).encode(),
}


def run_worst_cases() -> dict:
    from edgevl.testing.server import edgevl_serve_process

    results = {}
    for name, make in WORST_CASES.items():
        content = make()
        with edgevl_serve_process("--threads", "1") as (url, process, _):
            httpx.get(url.removesuffix("/v1") + "/health")
            idle, idle_peak = peak_rss_mb(process.pid)
            started = time.perf_counter()
            response = httpx.post(f"{url}/chat/completions", content=content, timeout=600,
                                  headers={"Content-Type": "application/json"})
            seconds = time.perf_counter() - started
            _, peak = peak_rss_mb(process.pid)
        results[name] = {"status": response.status_code, "body_mb": round(len(content) / 1e6, 2),
                         "idle_rss_mb": round(idle, 1), "peak_rss_mb": round(peak, 1),
                         "peak_over_idle_mb": round(peak - max(idle, idle_peak), 1), "seconds": round(seconds, 2)}
        print(f"{name:>28}: HTTP {response.status_code}, body {len(content) / 1e6:.2f} MB, "
              f"peak RSS {peak:.0f} MB (idle {idle:.0f} MB, +{peak - max(idle, idle_peak):.0f} MB), {seconds:.1f} s")
    return results


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worst_case:
        result = {"worst_case": run_worst_cases()}
    else:
        result = {"load": run_load(args)}
        load = result["load"]
        print(f"{load['requests']} requests from {load['clients']} clients in {load['seconds']} s")
        for kind in KINDS:
            latency = load["latency"][kind]
            timing = (f"p50 {latency['p50_ms']} ms, p90 {latency['p90_ms']} ms, p99 {latency['p99_ms']} ms, "
                      f"max {latency['max_ms']} ms") if latency else "-"
            print(f"  {kind:>9}: {load['outcomes'][kind]}  {timing}")
        print(f"  server: {load['server']}")
    path = args.out / "server-load.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**existing, **result}, indent=2))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
