"""Runtimes: embedded servers, the local runner, and the functions-framework adapter."""
