"""What the tests share: the in-process stack, the fake provider APIs, test doubles and the
helpers and fixtures more than one test module uses.

Test modules (test_*.py, conftest.py) import from here and never from each other;
tests/test_layout.py checks it.
"""
