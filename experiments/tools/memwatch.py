"""Peak memory of a process tree, sampled from /proc (Linux): the figure a user's machine must hold.

    python experiments/tools/memwatch.py --out memory.json -- croma benchmark udhr-speech ...
    python experiments/tools/memwatch.py --out memory.json --pid PID      # a run already going

Every ``--every`` seconds it sums, over the process and all its descendants (workers included),
the proportional set size (PSS: shared pages such as torch's libraries counted once across the
tree) and the resident set size (RSS: counted in every process), and keeps the peaks. It writes
``--out`` (atomically) after every sample, so the file holds the peaks so far even when the run is
stopped: ``{"peak_pss_mib", "peak_rss_sum_mib", "peak_processes", "samples", "every_s",
"command" | "pid", "started", "updated", "finished"}``. With a command, it exits with the
command's exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and every descendant alive now."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _kib(path: str, key: str) -> int:
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def sample(pid: int) -> tuple[float, float, int]:
    """(PSS MiB, RSS MiB summed, processes) of the tree of ``pid``."""
    procs = tree(pid)
    pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in procs)
    rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in procs)
    return pss / 1024.0, rss / 1024.0, len(procs)


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file of the peaks (rewritten after every sample)")
    ap.add_argument("--every", type=float, default=2.0, help="seconds between samples (default 2)")
    ap.add_argument("--pid", type=int, default=None, help="watch this running process instead of starting one")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: run and watch it")
    args = ap.parse_args(argv)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))  # SIGTERM: final write, as Ctrl-C
    cmd = [c for c in args.command if c != "--"] if args.command else []
    if (args.pid is None) == (not cmd):
        ap.error("give either --pid PID or -- COMMAND")
    proc = subprocess.Popen(cmd) if cmd else None
    pid = proc.pid if proc else args.pid
    out = Path(args.out)
    doc = {"peak_pss_mib": 0.0, "peak_rss_sum_mib": 0.0, "peak_processes": 0, "samples": 0, "every_s": args.every,
           **({"command": cmd} if cmd else {"pid": pid}), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "finished": False}
    try:
        while (proc.poll() is None) if proc else os.path.exists(f"/proc/{pid}"):
            pss, rss, n = sample(pid)
            if n:
                doc["peak_pss_mib"] = round(max(doc["peak_pss_mib"], pss), 1)
                doc["peak_rss_sum_mib"] = round(max(doc["peak_rss_sum_mib"], rss), 1)
                doc["peak_processes"] = max(doc["peak_processes"], n)
                doc["samples"] += 1
                doc["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                _write(out, doc)
            time.sleep(args.every)
    except KeyboardInterrupt:  # the peaks so far are kept; a watched command is waited for
        if proc:
            proc.wait()
    doc["finished"] = True
    if proc:
        doc["returncode"] = proc.wait()
    _write(out, doc)
    return int(doc.get("returncode", 0) or 0)


if __name__ == "__main__":
    sys.exit(main())
