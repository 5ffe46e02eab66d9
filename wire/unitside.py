"""The alarm unit's side of the alarm unit link: the frames only a unit builds.

wire/alarmunit.py is the link's one definition (types, codes, ``frame()``, the decoder both ends
read with); this module adds the builders of EVENT, HEARTBEAT and HEARD, so the bridge, which
only decodes them, never loads their code. The simulated unit and the tests import both.
"""

from wire.alarmunit import (DEVICES, EVENT_CODES, FLAG_MAINS, NO_MV, NO_RSSI, T_EVENT, T_HEARD,
                            T_HEARTBEAT, frame)


def event(serial, event_id, unit_time, name, device):
    """An EVENT frame; `name` from wire.alarms.EVENTS, `device` from DEVICES."""
    return frame(T_EVENT, serial, event_id, unit_time, EVENT_CODES.index(name) + 1,
                 DEVICES.index(device) + 1)


def heartbeat(serial, unit_time, mains=True, backup_mv=None, pendant_mv=None, pendant_rssi=None,
              firmware=(0, 0, 0)):
    """A HEARTBEAT frame with the unit's status: ``mains`` present, the backup pack's and the
    pendant's battery in mV and the pendant's RSSI in dBm (None: no reading), the unit's firmware
    version as (major, minor, patch)."""
    return frame(T_HEARTBEAT, serial, unit_time, FLAG_MAINS if mains else 0,
                 NO_MV if backup_mv is None else backup_mv,
                 NO_MV if pendant_mv is None else pendant_mv,
                 NO_RSSI if pendant_rssi is None else pendant_rssi,
                 firmware[0], firmware[1], firmware[2])


def heard(serial, prompt, event_id):
    """HEARD: the unit has played ``prompt`` (T_ALARM_RECEIVED or T_HELP_ON_THE_WAY) for its
    event ``event_id``."""
    return frame(T_HEARD, serial, prompt, event_id)
