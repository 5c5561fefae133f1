"""The pytest plugin (loaded as taskwatch.pytest_plugin)."""
