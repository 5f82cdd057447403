"""Shared state behind small interfaces: the Redis store, and an in-memory one for tests and replay."""
