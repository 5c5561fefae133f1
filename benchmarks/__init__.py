"""Overhead benchmarks for taskwatch against plain loops and other asyncio debugging tools.

Run ``python -m benchmarks`` from the repository root (``--quick`` for the CI smoke run).
Every measurement happens in a fresh subprocess (``benchmarks._worker``) so that contenders
cannot leak hooks, imports or heap state into each other.
"""
