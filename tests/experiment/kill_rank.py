"""`python -m tests.experiment.kill_rank FOLDER WORD...`: `keeptune run WORD...`, whose rank 1 (under torchrun)
kills itself with SIGKILL right after its first group of predictions in FOLDER is on disk: a kill -9 of one rank
mid-evaluation, at a known point."""
from __future__ import annotations

import os
import signal
import sys

from keeptune.cli import main
from keeptune.evaluate import engine


def append_then_die(folder: str, append):
    def append_jsonl(handle, records):
        append(handle, records)
        if os.environ.get("RANK") == "1" and os.path.dirname(handle.name) == folder:
            os.kill(os.getpid(), signal.SIGKILL)
    return append_jsonl


if __name__ == "__main__":
    engine.append_jsonl = append_then_die(sys.argv[1], engine.append_jsonl)
    sys.exit(main(["run", *sys.argv[2:]]))
