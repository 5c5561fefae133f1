"""The core: loop hooks, the per-loop probe, the per-task hot path and records, sites, the Task class.

It imports none of the wings (watchdog, sinks, OpenTelemetry, pytest, CLI); they attach to the
installed state through its ``Instruments`` registry.
"""
