"""Added latency and throughput of the audit proxy, against direct calls to the same server.

One model-server stand-in (an HTTP/1.1 keep-alive server on raw asyncio streams that reads the
body and answers 1 KiB of JSON: about the cheapest Python server there is, so the proxy's share is
not hidden behind a slow model) is called three ways in the same run, by the same open-loop load
generator (benchmarks/loadgen, Go), at the same rate, with the same 1 KiB JSON body:
  direct       load generator -> server
  audit proxy  load generator -> `modelguard agent audit-proxy` (Metadata records, signed and
               checkpointed, written to a file) -> server
  aiohttp      load generator -> a pass-through proxy on aiohttp's client and server (the other
               candidate stack; no records) -> server
  direct again the first path once more, last: how much the machine's own load moved within
               the run (on a shared machine, p99 differences smaller than that are noise)
The proxy, its record writer (a process of its own) and the server share one CPU as they share
a pod; the load generator runs on the other (with two or more CPUs). The proxy's CPU per request
is that of the proxy during the measured run, plus the record writer's over the whole load.
Open loop: request i is due at start + i/rate, and its latency counts from then. Capacity: back
to back on one connection for 2 seconds after the measured run.

Targets (issue 14): added p99 at most 1 ms and at least 90 % of direct throughput at 500
requests/s with 1 KiB bodies. Figures are printed, never asserted:
    make bench   or   PYTHONPATH=hack .venv/bin/python benchmarks/audit_proxy.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BODY_BYTES = 1024
RATE = 500.0
ADDED_P99_TARGET_MS = 1.0
THROUGHPUT_TARGET = 0.90


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------------------------
# The server and the aiohttp reference (run as child processes of this script)
# --------------------------------------------------------------------------------------------


async def _model_server(port: int) -> None:
    answer_body = json.dumps({"outputs": ["x" * (BODY_BYTES - 20)]}).encode()
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(answer_body)).encode()
        + b"\r\n\r\n"
        + answer_body
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    await server.serve_forever()


async def _aiohttp_proxy(port: int, upstream: int) -> None:
    from aiohttp import ClientSession, TCPConnector, web  # noqa: PLC0415

    session = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)
    base = f"http://127.0.0.1:{upstream}"

    async def handle(request: web.Request) -> web.StreamResponse:
        # The body is read whole first: aiohttp would send a streamed one chunked, which the
        # stand-in server does not read (and 1 KiB bodies fit one read anyway).
        async with session.request(
            request.method,
            base + request.path_qs,
            data=await request.read(),
            headers=request.headers,
        ) as answer:
            response = web.StreamResponse(status=answer.status, headers=answer.headers)
            await response.prepare(request)
            async for piece in answer.content.iter_chunked(64 * 1024):
                await response.write(piece)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _pin(pid: int, cpu: int | None) -> None:
    """Pins every thread of `pid` and of its children (the proxy's record writer) to `cpu`."""
    if cpu is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), {cpu})
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                _pin(int(child), cpu)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime, fields 14 and 15 of stat (11 and 12 after the command's closing paren).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a benchmark process exited early: {process.args!r}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextlib.contextmanager
def _process(
    command: list[str], *, port: int, cpu: int | None, stdout: typing.IO[bytes] | int
) -> typing.Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, process)
        _pin(process.pid, cpu)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _load(
    loadgen: Path, *, port: int, body: Path, seconds: float, pid: int, cpu: int | None
) -> dict[str, typing.Any]:
    command = [
        str(loadgen),
        "run",
        f"-url=http://127.0.0.1:{port}/v1/models/bench:predict",
        f"-body={body}",
        f"-rate={RATE:g}",
        f"-duration={seconds:g}s",
        "-warmup=2s",
        "-capacity=2s",
        f"-watch-pid={pid}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pin(process.pid, cpu)
    stdout, stderr = process.communicate(timeout=seconds * 2 + 120)
    if process.returncode != 0:
        raise RuntimeError(f"load generator failed: {stderr.strip()}")
    report: dict[str, typing.Any] = json.loads(stdout)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--aiohttp-proxy", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(_model_server(args.serve))
        return 0
    if args.aiohttp_proxy is not None:
        asyncio.run(_aiohttp_proxy(*args.aiohttp_proxy))
        return 0

    import webhook_latency  # noqa: PLC0415 - builds the load generator (needs hack/ on the path)

    loadgen = webhook_latency.loadgen_binary()
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[-1], cpus[0]) if len(cpus) >= 2 else (None, None)
    modelguard = str(Path(sys.executable).with_name("modelguard"))
    rows: list[tuple[str, dict[str, typing.Any]]] = []
    with tempfile.TemporaryDirectory(prefix="audit-proxy-bench-") as scratch:
        body = Path(scratch) / "body.json"
        body.write_text(json.dumps({"inputs": ["y" * (BODY_BYTES - 16)]})[:BODY_BYTES])
        server_port = _free_port()
        server_cmd = [sys.executable, __file__, "--serve", str(server_port)]
        with _process(server_cmd, port=server_port, cpu=server_cpu, stdout=subprocess.DEVNULL):
            rows.append(
                (
                    "direct",
                    _load(
                        loadgen,
                        port=server_port,
                        body=body,
                        seconds=args.seconds,
                        pid=os.getpid(),
                        cpu=client_cpu,
                    ),
                )
            )
            proxy_port = _free_port()
            records = Path(scratch) / "records.jsonl"
            proxy_cmd = [
                modelguard, "agent", "audit-proxy", "--listen-host", "127.0.0.1",
                "--port", str(proxy_port), "--upstream-port", str(server_port),
                "--log-name", "bench/model/inputs", "--max-request-bytes", str(16 << 20),
                "--rate", "100000",
            ]  # fmt: skip
            with (
                records.open("wb") as out,
                _process(proxy_cmd, port=proxy_port, cpu=server_cpu, stdout=out) as proxy,
            ):
                writers = _children(proxy.pid)
                before = sum(_cpu_seconds(pid) for pid in writers)
                report = _load(
                    loadgen,
                    port=proxy_port,
                    body=body,
                    seconds=args.seconds,
                    pid=proxy.pid,
                    cpu=client_cpu,
                )
                # The record writer's CPU over the whole load (warm-up, run and capacity), per
                # request sent in it.
                sent = RATE * (2 + args.seconds) + report.get("capacity_rate", 0) * 2
                spent = sum(_cpu_seconds(pid) for pid in writers) - before
                report["writer_cpu_ms_per_request"] = round(spent * 1000 / max(sent, 1), 3)
                rows.append(("audit proxy", report))
            written = sum(1 for line in records.open() if '"InferenceRequest"' in line)
            aio_port = _free_port()
            aio_cmd = [sys.executable, __file__, "--aiohttp-proxy", str(aio_port), str(server_port)]
            with _process(aio_cmd, port=aio_port, cpu=server_cpu, stdout=subprocess.DEVNULL) as aio:
                rows.append(
                    (
                        "aiohttp proxy",
                        _load(
                            loadgen,
                            port=aio_port,
                            body=body,
                            seconds=args.seconds,
                            pid=aio.pid,
                            cpu=client_cpu,
                        ),
                    )
                )
            # Direct once more: how far the machine's own noise moves the reference in one run.
            rows.append(
                (
                    "direct again",
                    _load(
                        loadgen,
                        port=server_port,
                        body=body,
                        seconds=args.seconds,
                        pid=os.getpid(),
                        cpu=client_cpu,
                    ),
                )
            )
    _print(rows, seconds=args.seconds, records=written, pinned=server_cpu is not None)
    return 0


def _print(
    rows: list[tuple[str, dict[str, typing.Any]]], *, seconds: float, records: int, pinned: bool
) -> None:
    print(
        f"audit proxy: {RATE:g} requests/s for {seconds:g} s, {BODY_BYTES} B bodies, open loop"
        + (" (server and proxy on one CPU, load generator on another)" if pinned else "")
    )
    print(
        f"{'path':<14} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9} {'rate/s':>8} "
        f"{'errors':>6} {'capacity/s':>11} {'proxy CPU ms/req':>26}"
    )
    for name, report in rows:
        latency = report["latency_ms"]
        cpu = report["server"].get("cpu_ms_per_request", "") if "direct" not in name else ""
        if "writer_cpu_ms_per_request" in report:
            cpu = f"{cpu} + {report['writer_cpu_ms_per_request']} writer"
        print(
            f"{name:<14} {latency['p50']:>8.3f} {latency['p99']:>8.3f} {latency['p999']:>9.3f} "
            f"{report.get('achieved_rate', 0):>8} {report['errors']:>6} "
            f"{report.get('capacity_rate', 0):>11} {cpu:>26}"
        )
    direct = rows[0][1]
    for name, report in rows[1:-1]:
        added = report["latency_ms"]["p99"] - direct["latency_ms"]["p99"]
        ratio = report.get("achieved_rate", 0) / max(direct.get("achieved_rate", 0), 1e-9)
        capacity = report.get("capacity_rate", 0) / max(direct.get("capacity_rate", 0), 1e-9)
        print(
            f"{name}: added p99 {added:+.3f} ms (target <= {ADDED_P99_TARGET_MS:g}), "
            f"throughput {ratio:.1%} of direct at {RATE:g}/s (target >= "
            f"{THROUGHPUT_TARGET:.0%}), back-to-back capacity {capacity:.1%} of direct"
        )
    print(
        f"audit proxy records written: {records}; direct vs direct again shows the machine's "
        "own noise in this run"
    )


if __name__ == "__main__":
    sys.exit(main())
