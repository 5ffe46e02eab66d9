"""What became of a lock operation, and every reason the hub can give when it did not succeed.

One vocabulary, imported by hubd (its lock drivers' results, which reach the locks through the
bridge's Bluetooth proxy, and its own reasons) and hubapi (the answers a backend decodes). hubd's
``OpResult`` refuses an outcome or reason that is not here, hubapi's ``Answer`` likewise, and
docs/mqtt-api.md lists every reason with its meaning (generated from hubapi.schema). A new
reason is added here first. Plain tuples of str, as when the bridge ran the drivers and imported
this module too (it no longer does).
"""

# -- outcomes of an operation (a link "result"; the final status of an answer) ---------------
SUCCEEDED = "succeeded"
FAILED = "failed"  # not done; nothing moved
TIMED_OUT = "timed_out"  # the lock could not be reached in time; the command was not written
INCOMPLETE = "incomplete"  # written, but its result was lost: the lock may have moved; never resent
OUTCOMES = (SUCCEEDED, FAILED, TIMED_OUT, INCOMPLETE)

# -- the lock refused: its protocol status (wire/lockproto.STATUSES), passed on by the driver --
AUTH_FAILED = "auth_failed"
BUSY = "busy"
JAMMED = "jammed"
LOW_BATTERY = "low_battery"
BAD_REQUEST = "bad_request"
CHALLENGE_EXPIRED = "challenge_expired"
DUPLICATE = "duplicate"
UNSUPPORTED = "unsupported"
NOT_PAIRING = "not_pairing"
LOCK_REASONS = (AUTH_FAILED, BUSY, JAMMED, LOW_BATTERY, BAD_REQUEST, CHALLENGE_EXPIRED, DUPLICATE,
                UNSUPPORTED, NOT_PAIRING)

# -- the lock driver: before the lock, and on the way to it and back (the names say "bridge"
# where the firmware's drivers gave them first; the API keeps them) -------------------------
UNKNOWN_LOCK = "unknown_lock"
UNSUPPORTED_ACTION = "unsupported_action"
DUPLICATE_COMMAND = "duplicate_command"
QUEUED_TOO_LONG = "queued_too_long"
UNREACHABLE = "unreachable"
LINK_FAILED = "link_failed"
NO_CHALLENGE = "no_challenge"
LINK_LOST = "link_lost"  # also hubd's, when the serial link to the bridge went down
NO_RESULT = "no_result"  # also hubd's: written, and no result came in time
BAD_LOCK_MAC = "bad_lock_mac"
BRIDGE_ERROR = "bridge_error"  # also hubd's
DRIVER_ERROR = "driver_error"
BRIDGE_REASONS = (UNKNOWN_LOCK, UNSUPPORTED_ACTION, DUPLICATE_COMMAND, QUEUED_TOO_LONG, UNREACHABLE,
                  LINK_FAILED, NO_CHALLENGE, LINK_LOST, NO_RESULT, BAD_LOCK_MAC, BRIDGE_ERROR,
                  DRIVER_ERROR)

# -- hubd's own -------------------------------------------------------------------------------
BRIDGE_UNAVAILABLE = "bridge_unavailable"
BRIDGE_BUSY = "bridge_busy"
BRIDGE_NO_RESPONSE = "bridge_no_response"
BRIDGE_RESTARTED = "bridge_restarted"
EXPIRED_IN_QUEUE = "expired_in_queue"
SHUTTING_DOWN = "shutting_down"
HUBD_RESTARTED = "hubd_restarted"
SUPERSEDED = "superseded"  # a prepare's hold ended by a later command or prepare before it was up
DAILY_HOLD_SPENT = "daily_hold_spent"  # a prepare: the lock was held its [visit] daily_hold_s today
# The reasons that say the lock was not reached in time: an operation that wrote nothing (a
# command, a status read, a prepare) ends timed_out for them, failed for any other (waiting longer
# would not have helped: the bridge's link is down, the lock refused this hub, ...): unwritten().
NOT_REACHED = (UNREACHABLE, LINK_FAILED, NO_CHALLENGE, BRIDGE_BUSY, BRIDGE_NO_RESPONSE)
HUB_REASONS = (BRIDGE_UNAVAILABLE, BRIDGE_BUSY, BRIDGE_NO_RESPONSE, BRIDGE_RESTARTED,
               EXPIRED_IN_QUEUE, SHUTTING_DOWN, HUBD_RESTARTED, SUPERSEDED, DAILY_HOLD_SPENT)

# What a lock driver's result may carry (the lock's and the driver's), and every reason of a final
# status other than succeeded (those and hubd's).
RESULT_REASONS = LOCK_REASONS + BRIDGE_REASONS
REASONS = RESULT_REASONS + HUB_REASONS

# -- how a pairing ended (hubd's technician socket, hubctl pair and decommission; the fixes told
# for each: hubd.technician.commissioning) ---------------------------------------------------
PAIRED = "ok"  # a PAIR or UNPAIR (or a dKey's association) done
NOT_BONDED = "not_bonded"  # a dKey's bonding failed on the hub's own adapter: refused or lost
EXISTS = "exists"  # refused before the lock: hubd has a pairing for that id or address already
PAIR_RESULTS = (PAIRED, NOT_PAIRING, AUTH_FAILED, UNREACHABLE, BAD_LOCK_MAC, NOT_BONDED, FAILED)
UNPAIR_RESULTS = (PAIRED, AUTH_FAILED, UNREACHABLE, BAD_LOCK_MAC, FAILED)

# -- a command refused before anything moved (status "rejected"): hubd's verification --------
MALFORMED = "malformed"
BAD_SIGNATURE = "bad_signature"
UNKNOWN_KEY = "unknown_key"
EXPIRED = "expired"
NOT_YET_VALID = "not_yet_valid"
REPLAYED = "replayed"
WRONG_HUB = "wrong_hub"
RETAINED = "retained"
STORE_FAILED = "store_failed"
REJECT_REASONS = (MALFORMED, BAD_SIGNATURE, UNKNOWN_KEY, EXPIRED, NOT_YET_VALID, REPLAYED,
                  WRONG_HUB, UNKNOWN_LOCK, UNSUPPORTED_ACTION, RETAINED, BUSY, STORE_FAILED)


def unfinished(written, otherwise=FAILED):
    """The at-most-once rule, for an operation that ended without the lock's result: once its
    write was attempted the lock may have moved, so it is ``incomplete`` with the lock's state
    ``unknown`` (and it is never sent again); before that, nothing moved: ``otherwise`` (failed,
    or timed_out) with no state. Returns (outcome, state)."""
    return (INCOMPLETE, "unknown") if written else (otherwise, None)


def unwritten(reason: str) -> str:
    """The final status of an operation that wrote nothing to the lock, by its reason:
    ``timed_out`` when the lock was not reached in time (NOT_REACHED), else ``failed``."""
    return TIMED_OUT if reason in NOT_REACHED else FAILED
