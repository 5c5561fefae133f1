"""Where findings go besides OpenTelemetry and pytest: logging, the JSON report, the task dump."""
