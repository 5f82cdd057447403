"""Benchmarks as commands that print figures (`alphapanda bench ...`); they are not tests."""
