"""The safety alarm vocabulary: what an alarm unit reports, and how urgent it is.

One definition, imported by the firmware (alarm unit link, journal, second path), hubd (outbox,
MQTT), the simulator (alarm unit, alarm centre) and the DC-09 encoder.
"""

# Events from the alarm unit (wire/alarmunit.py carries them as codes).
BUTTON = "button"  # wrist or neck button pressed
FALL = "fall"  # fall detector
PULL_CORD = "pull_cord"
SMOKE = "smoke"
MAINS_LOST = "mains_lost"  # the base unit runs on its backup battery
MAINS_RESTORED = "mains_restored"
LOW_BATTERY = "low_battery"
TAMPER = "tamper"
TEST = "test"  # a test alarm: delivered and confirmed like any other, marked as a test
EVENTS = (BUTTON, FALL, PULL_CORD, SMOKE, MAINS_LOST, MAINS_RESTORED, LOW_BATTERY, TAMPER, TEST)

# Supervision: the loss and restore of a link are reported to the alarm centre too.
UNIT_LINK_LOST = "unit_link_lost"  # alarm unit <-> bridge
UNIT_LINK_RESTORED = "unit_link_restored"
HUB_LINK_LOST = "hub_link_lost"  # bridge <-> hubd
HUB_LINK_RESTORED = "hub_link_restored"
SUPERVISION = (UNIT_LINK_LOST, UNIT_LINK_RESTORED, HUB_LINK_LOST, HUB_LINK_RESTORED)

# Priority: 1 a life may be at stake, 2 the safety chain is weakened, 3 information. Tuples read
# by priority(), not a dict: a 13-entry dict cost the bridge's heap ~400 bytes on 64-bit.
_SAFETY_CHAIN = (MAINS_LOST, LOW_BATTERY, TAMPER, UNIT_LINK_LOST, HUB_LINK_LOST)
_INFORMATION = (MAINS_RESTORED, TEST, UNIT_LINK_RESTORED, HUB_LINK_RESTORED)


def priority(event):
    """1 (life), 2 (safety chain weakened) or 3 (information); unknown events count as 1."""
    if event in _SAFETY_CHAIN:
        return 2
    if event in _INFORMATION:
        return 3
    return 1


def alarm_id(unit, unit_event_id):
    """The stable id of an alarm: the unit's id and its own event number. Every retry and both
    delivery paths carry it, so the alarm centre recognises a duplicate."""
    return "%s-%d" % (unit, unit_event_id)
