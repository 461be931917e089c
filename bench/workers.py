"""``gateway.workers``: request rate with 1 and 2 workers, and held Pings past one
process's descriptor limit, in one run on one PostgreSQL database.

Approach. The gateway runs as an operator runs it (``sentry run``), with a
PostgreSQL store (a database made for the run and dropped after it), TLS off,
the console off, JSON logs with the access log to a file. For the baseline the
node is ``workers: 1`` (one process, no supervisor); then ``workers: 2`` (a
supervisor and two workers on one port). The node's CPU is the sum over its
process tree (supervisor and workers), read from /proc between ``go`` and
the result.

Request rate. One load generator process (closed loop on ``connections``
keep-alive connections, one request repeated: ``wrk`` when it is installed,
``bench/wrkgen.py``, else ``bench.hammer``; ``--generator`` chooses) runs
``duration`` seconds per case, two cases per node:

* ``refused``: a FolderSync of a device an administrator blocked: the gateway
  answers it alone (parse, identity, decision, refusal), so the rate measures
  the gateway and the ratio says how it scales with workers;
* ``forwarded``: a FolderSync of an allowed device, answered by the demo
  backend: the backend is one Python process on the same two cores, so this
  ratio is bounded by the backend, not by the gateway.

The machine has two cores for the node, the generator and (forwarded) the
backend: two workers cannot get two full cores, so the report gives each
process's CPU seconds and the node's requests per core-second beside the
ratio. The generator's own CPU is what two workers cannot have: the Python
hammer took a third of a core at the refused rate, wrk a fraction of that.
Its wake-ups cost the workers more than its CPU: a normal task woken by an
answer preempts the worker on that core, reads a socket or two and sleeps,
and the worker resumes with cold caches. Phones on other machines put no
such cost on the gateway, so wrk runs under ``SCHED_BATCH`` by default
(``batch``, ``wrkgen.batch_scheduled``): its wake-ups wait for the tick or
an idle core, and it finds more answers at each (2026-12-05, three pairs of
runs: 1.83-1.87x against 1.74-1.78x normally scheduled, wrk 0.5-0.6 CPU-s
against 1.2-1.3 beside two workers).

Held Pings. The node's processes get a soft RLIMIT_NOFILE of ``nofile``
(2048 by default: the gateway caps device connections at half of what is left
after a reserve, 928 here, since each held Ping also holds one backend
connection), then ``pings`` devices each send one long Ping (``bench.loadgen``
``hold``). One worker holds at most its cap and refuses the rest; two workers
hold them all: more held Pings than one process's descriptor limit allows.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import wrkgen
from bench.eas_mix import PASSWORD, Session, make_bodies
from bench.held import _sample_until_held
from bench.proc import BenchError, Proc, start, tree_cpu
from bench.servers import GatewayProc, ServerProc, gateway_settings, metric, start_backend

__all__ = ["WorkersOptions", "run_workers", "workers_markdown"]

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
BLOCKED = Session("WKBLOCKED01", "user000000")
ALLOWED = Session("WKALLOWED01", "user000001")
NOFILE = """
import os, resource, sys
soft = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
os.execvp(sys.argv[2], sys.argv[2:])
"""


@dataclass
class WorkersOptions:
    dsn: str = ""  # a superuser URI; "" -> SENTRY_TEST_POSTGRES_DSN or the local server
    duration: float = 10.0
    connections: int = 32
    pings: int = 1500
    nofile: int = 2048
    ramp_rate: float = 500.0
    workers: tuple[int, ...] = (1, 2)
    generator: str = "auto"  # "wrk", "hammer" or "auto" (wrk when installed)
    pipeline: int = 1  # wrk only: requests per write on each connection
    batch: bool = False  # wrk only: under SCHED_BATCH (wrkgen.batch_scheduled; the CLI's default)

    def chosen_generator(self) -> str:
        if self.generator == "auto":
            return "wrk" if wrkgen.available() else "hammer"
        return self.generator


def _config(servers: list[str], dsn: str, workers: int, tls: bool = False) -> dict[str, Any]:
    config = gateway_settings(servers, tls=tls)
    config["gateway"]["workers"] = workers
    config["admin"]["console"] = {"enabled": False}
    config["store"] = {"kind": "postgresql", "dsn": dsn}
    return config


def start_node(
    workdir: Path,
    servers: list[str],
    dsn: str,
    workers: int,
    nofile: int | None = None,
    *,
    tls: bool = False,
) -> GatewayProc:
    """``sentry run`` with ``workers`` (and a soft descriptor limit); its URLs."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    config = workdir / "sentry.yaml"
    config.write_text(yaml.safe_dump(_config(servers, dsn, workers, tls), sort_keys=False))
    argv = [sys.executable, "-m", "sentry", "run", "--config", str(config)]
    if nofile is not None:
        argv = [sys.executable, "-c", NOFILE, str(nofile), *argv]
    proc = start(f"gateway-w{workers}", argv, workdir)
    log = workdir / "gateway.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        proc.check_alive()
        for event in _events(log, "started"):
            if workers == 1 or event.get("worker") == 0:
                host, port = event["devices"].rsplit("//", 1)[1].rsplit(":", 1)
                return GatewayProc(proc, host, int(port), event["admin"], workdir, tls)
        time.sleep(0.1)
    proc.stop()
    raise BenchError(f"the {workers}-worker node did not start:\n{proc.tail()}")


def _events(log: Path, name: str) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if f'"{name}"' in line:
            event = json.loads(line)
            if event.get("event") == name:
                out.append(event)
    return out


def _request(session: Session, host: str) -> str:
    body = make_bodies(60).static[5]  # FolderSync
    auth = base64.b64encode(f"{session.user}:{PASSWORD}".encode()).decode()
    head = (
        f"POST /Microsoft-Server-ActiveSync?Cmd=FolderSync&User={session.user}"
        f"&DeviceId={session.device_id}&DeviceType={session.device_type} HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Basic {auth}\r\nMS-ASProtocolVersion: 14.1\r\n"
        "User-Agent: Apple-iPhone15C2/2104.1\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head + body.decode("latin-1")


def _admin(gw: GatewayProc, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        gw.admin_url + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {gw.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
        return answer


def _block(gw: GatewayProc) -> None:
    """Pre-approve, then block, the ``BLOCKED`` pair (a row in the shared store)."""
    base = f"/api/associations/{BLOCKED.device_id}/{BLOCKED.user}"
    _admin(gw, f"{base}/preapprove", {"note": "bench workers"})
    _admin(gw, f"{base}/block", {"note": "bench workers"})


def _rate(
    gw: GatewayProc, backend: Proc, case: str, opts: WorkersOptions, work: Path
) -> dict[str, Any]:
    session = BLOCKED if case == "refused" else ALLOWED
    request = _request(session, f"{gw.host}:{gw.port}")
    if opts.chosen_generator() == "wrk":
        node0, backend0 = tree_cpu(gw.proc.pid), backend.cpu()
        args = (gw.host, gw.port, request, opts.connections, opts.duration)
        result = wrkgen.run(*args, work / f"wrk-{case}", opts.pipeline, opts.batch)
        node_cpu = tree_cpu(gw.proc.pid) - node0
        backend_cpu = backend.cpu() - backend0
    else:
        result, node_cpu, backend_cpu = _hammer(gw, backend, request, case, opts, work)
    answers = sum(result["statuses"].values())
    seconds = result["seconds"]
    return {
        "case": case,
        "requests": answers,
        "req_per_s": answers / seconds,
        "statuses": result["statuses"],
        "reconnects": result["reconnects"],
        "node_cpu_s": node_cpu,
        "node_cores": node_cpu / seconds,
        "backend_cpu_s": backend_cpu,
        "generator_cpu_s": result["cpu_seconds"],
        "req_per_node_core_s": answers / node_cpu if node_cpu else 0.0,
        "seconds": seconds,
    }


def _hammer(
    gw: GatewayProc, backend: Proc, request: str, case: str, opts: WorkersOptions, work: Path
) -> tuple[dict[str, Any], float, float]:
    """``bench.hammer``'s result, and the node's and the backend's CPU seconds meanwhile."""
    job = {
        "host": gw.host,
        "port": gw.port,
        "connections": opts.connections,
        "duration": opts.duration,
        "request": request,
    }
    gen = start(f"hammer-{case}", [sys.executable, "-m", "bench.hammer"], work, pipes=True)
    try:
        gen.send({"job": job})
        gen.receive(60)
        node0, backend0 = tree_cpu(gw.proc.pid), backend.cpu()
        gen.send({"cmd": "go"})
        result: dict[str, Any] = gen.receive(opts.duration + 60)
        return result, tree_cpu(gw.proc.pid) - node0, backend.cpu() - backend0
    finally:
        gen.stop()


def _hold(gw: GatewayProc, backend: ServerProc, opts: WorkersOptions, work: Path) -> dict[str, Any]:
    sessions = [Session(f"WKHOLD{i:06d}", f"user{i:06d}") for i in range(opts.pings)]
    job = {
        "mode": "hold",
        "host": gw.host,
        "port": gw.port,
        "tls": False,
        "prime": False,
        "sessions": [[s.device_id, s.user, s.device_type] for s in sessions],
        "heartbeat": 600,
        "ramp_rate": opts.ramp_rate,
        "local_hosts": [],
        "deadline": 600,
        "out": str(work / "hold.json"),
    }
    gen = start("hold", [sys.executable, "-m", "bench.loadgen"], work, pipes=True)
    try:
        gen.send({"job": job})
        gen.receive(120)  # primed (nothing to prime)
        gen.send({"cmd": "go"})
        samples = _sample_until_held(gw, opts.pings, opts.pings / opts.ramp_rate)
        text = gw.metrics_text()
    finally:
        gen.stop()
    per_worker = {}
    for line in text.splitlines():
        if line.startswith("process_open_fds{"):
            worker = line.split('worker="', 1)[1].split('"', 1)[0]
            per_worker[worker] = float(line.rsplit(" ", 1)[1])
    return {
        "held": samples[-1][0],
        "refused": metric(text, "sentry_connections_refused_total", listener="devices"),
        "cap": metric(text, "sentry_connections_max", listener="devices"),
        "open_fds": per_worker or {"1": metric(text, "process_open_fds")},
        "max_fds": metric(text, "process_max_fds") / max(1, len(per_worker) or 1),
    }


def database(dsn: str) -> tuple[Any, str]:
    from sentry.testing.postgres import Databases

    databases = Databases(dsn)
    return databases, asyncio.run(databases.create())


def run_workers(opts: WorkersOptions, work: Path) -> dict[str, Any]:
    """Both parts for each worker count in ``opts.workers`` (module comment)."""
    work = work.resolve()
    dsn = opts.dsn or os.environ.get("SENTRY_TEST_POSTGRES_DSN") or DEFAULT_DSN
    databases, db = database(dsn)
    backend = start_backend(work / "backend", max(opts.pings, 2), min_heartbeat=1)
    servers = [backend.url]
    rates: dict[str, dict[str, Any]] = {}
    held: dict[str, dict[str, Any]] = {}
    try:
        for n in opts.workers:
            print(f"workers: {n} worker(s), request rate", flush=True)
            gw = start_node(work / f"rate-w{n}", servers, db, n)
            try:
                if n == opts.workers[0]:
                    _block(gw)
                for case in ("refused", "forwarded"):
                    r = _rate(gw, backend.proc, case, opts, work / f"rate-w{n}")
                    rates[f"{case}@{n}"] = r
                    print(f"  {case}: {r['req_per_s']:,.0f} req/s", flush=True)
            finally:
                gw.proc.stop(30)
        for n in opts.workers:
            print(f"workers: {n} worker(s), {opts.pings:,} held Pings", flush=True)
            gw = start_node(work / f"held-w{n}", servers, db, n, nofile=opts.nofile)
            try:
                held[str(n)] = h = _hold(gw, backend, opts, work / f"held-w{n}")
                print(f"  held {h['held']:,}, refused {h['refused']:,.0f}", flush=True)
            finally:
                gw.proc.stop(30)
    finally:
        backend.proc.stop()
        asyncio.run(databases.drop_all())
    base, top = opts.workers[0], opts.workers[-1]
    ratios = {
        case: rates[f"{case}@{top}"]["req_per_s"] / rates[f"{case}@{base}"]["req_per_s"]
        for case in ("refused", "forwarded")
    }
    return {
        "scenario": "workers",
        "options": {**vars(opts), "dsn": "(given)" if opts.dsn else "(default)"},
        "generator": opts.chosen_generator(),
        "rates": rates,
        "ratios": ratios,
        "held": held,
        "cpus": os.cpu_count(),
    }


def workers_markdown(r: dict[str, Any]) -> str:
    o = r["options"]
    lines = [
        f"{r['cpus']} CPUs; {o['connections']} keep-alive connections from one generator "
        f"process ({r.get('generator', 'hammer')}{_pipelined(o)}), {o['duration']:.0f} s per case; "
        "PostgreSQL store, TLS off.",
        "",
        "| case | workers | req/s | node CPU s (cores) | req per node core-s | backend CPU s "
        "| generator CPU s |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, e in r["rates"].items():
        case, n = key.split("@")
        lines.append(
            f"| {case} | {n} | {e['req_per_s']:,.0f} | {e['node_cpu_s']:.1f} "
            f"({e['node_cores']:.2f}) | {e['req_per_node_core_s']:,.0f} | "
            f"{e['backend_cpu_s']:.1f} | {e['generator_cpu_s']:.1f} |"
        )
    lines.append("")
    for case, ratio in r["ratios"].items():
        lines.append(f"- {case}: {o['workers'][-1]} workers / 1 = {ratio:.2f}x req/s")
    lines += [
        "",
        f"Held Pings: {o['pings']:,} devices, soft RLIMIT_NOFILE {o['nofile']:,} per process.",
        "",
        "| workers | held | refused at the cap | cap (node) | open fds per worker |",
        "|---|---|---|---|---|",
    ]
    for n, h in r["held"].items():
        fds = ", ".join(f"{w}: {v:,.0f}" for w, v in sorted(h["open_fds"].items()))
        lines.append(f"| {n} | {h['held']:,} | {h['refused']:,.0f} | {h['cap']:,.0f} | {fds} |")
    return "\n".join(lines)


def _pipelined(o: dict[str, Any]) -> str:
    depth = int(o.get("pipeline", 1))
    batch = ", under SCHED_BATCH" if o.get("batch") else ""
    return (f", {depth} requests pipelined in each write" if depth > 1 else "") + batch
