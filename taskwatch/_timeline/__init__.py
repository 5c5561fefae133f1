"""The timeline wing: a ring of task events (``_recorder``), written as Chrome trace-event JSON
(``_chrome``) on demand, at exit, or by the flight recorder when the loop blocks (``_flight``)."""
