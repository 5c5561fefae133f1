"""The watchdog: taskwatch's thread that sees a loop blocked, by which task and doing what."""
