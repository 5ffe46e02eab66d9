"""The command path: a signed MQTT command verified (verify), journaled at most once (journal), run
per lock (commands), and the locks' last known state (lockstate)."""
