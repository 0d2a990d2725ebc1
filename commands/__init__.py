"""The `tempay` command and the processes it runs: cli (the parser), dev (the embedded
stack), demo, and worker (the worker process). Entry points only: nothing below imports
them."""
