"""The proof behind tempay's published figures: the benchmarks (`tempay bench`: bench, load,
baseline_workflows, and the worker that runs the baselines beside the payments) back
docs/benchmarks.md, and the fault harness (`tempay faults`: faults) backs
docs/reliability.md.

Never imported by the runtime (tempay, workflows, activities, webhook, providers, worker.py;
tests/test_runtime_layering.py checks it) and not in the wheel or the image: `tempay bench`
and `tempay faults` import it from a source checkout only.
"""
