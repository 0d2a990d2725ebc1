"""Fake provider APIs for tests."""
