"""Shared by the bench scripts: figures go to the file named by BENCH_JSON (one JSON object per
line) so that bench/compare.py can print them all as one table."""
import json
import os


def emit(figure, wharf, containerd=None, note=""):
    """One figure: lists of samples (or a single value) for each daemon; None = not measured."""
    path = os.environ.get("BENCH_JSON")
    if not path:
        return

    def samples(x):
        if x is None:
            return None
        return list(x) if isinstance(x, (list, tuple)) else [x]
    with open(path, "a") as f:
        f.write(json.dumps({"figure": figure, "wharf": samples(wharf), "containerd": samples(containerd),
                            "note": note}) + "\n")
