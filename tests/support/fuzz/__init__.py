"""The fuzz suite's stack in a thread of its own, its request strategies and its tally."""
