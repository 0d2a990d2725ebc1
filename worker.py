"""`python worker.py` runs the tempay worker: exactly `tempay worker`, one-line errors included."""

from commands.cli import main

if __name__ == "__main__":
    main(["worker"])
