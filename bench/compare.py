#!/usr/bin/env python3
"""One entry point for the whole comparison: runs every bench script against wharfd and a
private Debian containerd 1.6 (+ runc) on this machine, then prints one table and writes it to
bench/results/<timestamp>/ and bench/RESULTS.md.

Run as root from the repository: `bash bench/compare.sh` (installs what it needs first).
QUICK=1 takes fewer samples (a smoke run, not for the record).
`bash bench/compare.sh --into bench/results/<stamp> dist_pull.py` runs only the named scripts,
adding their figures to an earlier run's (to redo one that failed), and prints the whole table;
`--table bench/results/<stamp>` prints an earlier run's table again.
"""
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
from common import build_release  # noqa: E402


NOTES_MARKER = "<!-- notes: kept by compare.py -->"
SCRIPTS = ["foundation.py", "pull.py", "dist_pull.py", "run.py", "cri.py"]


def wait_quiet(max_wait=300, threshold=0.5):
    """Waits until the 1-minute load average drops below `threshold` (or gives up)."""
    deadline = time.time() + max_wait
    while time.time() < deadline:
        if os.getloadavg()[0] < threshold:
            return True
        time.sleep(5)
    return False


def fmt(xs):
    if not xs:
        return "not measured"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main():
    if os.geteuid() != 0:
        sys.exit("run as root")
    args = sys.argv[1:]
    out = None
    if args[:1] == ["--table"] and len(args) == 2:
        # Only prints (and records) the table of an earlier run.
        out = os.path.abspath(args[1])
        render(out, os.path.basename(out), quiet=True)
        return
    if args[:1] == ["--into"] and len(args) >= 2:
        out, args = os.path.abspath(args[1]), args[2:]
    unknown = [a for a in args if a not in SCRIPTS]
    if unknown:
        sys.exit(f"unknown bench scripts {unknown}; known: {SCRIPTS}")
    scripts = args or SCRIPTS
    if out is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = os.path.join(BENCH, "results", stamp)
    stamp = os.path.basename(out)
    os.makedirs(out, exist_ok=True)
    data = os.path.join(out, "figures.jsonl")
    # Built once before measuring (each script's own build is then a no-op).
    build_release(REPO)
    quiet = wait_quiet(int(os.environ.get("QUIET_WAIT", "300")))
    env = dict(os.environ, BENCH_JSON=data)
    if os.environ.get("QUICK"):
        env.update(RUNS="3", N_SEQ="10", N_CONC="5", INGEST_MIB="128")
    for script in scripts:
        if len(scripts) < len(SCRIPTS) and os.path.exists(data):
            # Redone: the earlier figures of this script go.
            kept = [l for l in open(data) if json.loads(l).get("script") != script]
            with open(data, "w") as f:
                f.writelines(kept)
        with open(os.path.join(out, script.replace(".py", ".log")), "w") as log:
            print(f"== {script}", flush=True)
            r = subprocess.run([sys.executable, os.path.join(BENCH, script)], env=env, cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            log.write(r.stdout)
            print(r.stdout[-3000:])
            if r.returncode != 0:
                print(f"{script} failed (exit {r.returncode}); its figures are missing")
    render(out, stamp, quiet)


def render(out, stamp, quiet):
    """Prints the table of the figures in `out`, writes it there and to bench/RESULTS.md."""
    data = os.path.join(out, "figures.jsonl")
    rows = [json.loads(l) for l in open(data)] if os.path.exists(data) else []
    order = {name: i for i, name in enumerate(SCRIPTS)}
    rows.sort(key=lambda r: order.get(r.get("script"), len(SCRIPTS)))
    kernel = os.uname().release
    lines = [f"Measured {stamp} UTC on {os.cpu_count()} cores, kernel {kernel}"
             f"{'' if quiet else ' (the machine never became quiet: figures are noisy)'}; "
             "wharfd vs a private Debian containerd 1.6 + runc, same ctr, same run, alternating; "
             "median (min-max).", "",
             "| figure | wharf | containerd | wharf / containerd | note |", "|---|---|---|---|---|"]
    for r in rows:
        w, c = r["wharf"], r["containerd"]
        ratio = f"{statistics.median(w) / statistics.median(c):.2f}x" if w and c and statistics.median(c) else ""
        lines.append(f"| {r['figure']} | {fmt(w)} | {fmt(c)} | {ratio} | {r['note']} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    if not os.environ.get("QUICK"):
        # Hand-written notes below the marker are kept.
        results = os.path.join(BENCH, "RESULTS.md")
        notes = ""
        if os.path.exists(results):
            old = open(results).read()
            if NOTES_MARKER in old:
                notes = "\n" + old[old.index(NOTES_MARKER):]
        with open(results, "w") as f:
            f.write("# Benchmark results\n\nWritten by `bash bench/compare.sh` (raw logs in "
                    f"`bench/results/{stamp}/`).\n\n{table}\n{notes}")


if __name__ == "__main__":
    main()
