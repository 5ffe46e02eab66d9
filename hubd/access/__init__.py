"""The command path: a signed MQTT command verified (verify), journaled at most once (journal), run
per lock (commands) on a lock transport (transport: the seam; the bridge is the first), timed
(timing), and the locks' last known state (lockstate)."""
