"""`python -m proof.worker`: the tempay worker plus the benchmarks' baseline workflows
(proof/baseline_workflows.py), on the same task queue and in the same process as the payments
they are compared with. Only the benchmarks' private stacks run it (`Stack(worker=ARGV,
sandbox_env=ENV)`); `tempay worker` never registers the baselines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from commands.worker import run_worker
from proof.baseline_workflows import BareListenerWorkflow, BareSettlementWorkflow, bare_activity
from tempay.settings import get_settings

WORKFLOWS = (BareSettlementWorkflow, BareListenerWorkflow)
ACTIVITIES = (bare_activity,)
ARGV = (sys.executable, "-m", "proof.worker")
# An editable install maps only the packages the wheel ships, so a child process finds
# `proof` through its checkout on PYTHONPATH, from whatever directory it was started in.
CHECKOUT = str(Path(__file__).resolve().parents[1])
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [CHECKOUT, os.environ.get("PYTHONPATH")]))}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(run_worker(get_settings(), WORKFLOWS, ACTIVITIES))
    # As `tempay worker` leaves (tempay/cli.py's _exit): the Temporal client's native threads
    # can crash CPython's finalisation (temporalio/sdk-python#300).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
