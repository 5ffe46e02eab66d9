"""The command path: a signed MQTT command verified (verify), journaled at most once (journal), run
per lock (commands) on a lock transport (transport: the seam; hubd's lock drivers behind it), timed
(timing), and the locks' last known state (lockstate)."""
