"""hubd's durable state: one SQLite file (database), the hash-chained audit trail (audit) and the
outbox of messages owed to the broker (outbox)."""
