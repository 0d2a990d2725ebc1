"""`python worker.py` runs the tempay worker (the same as `tempay worker`)."""

import asyncio
import logging

from commands.worker import run_worker

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(run_worker())
