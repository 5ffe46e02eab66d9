"""How long things take on the simulated air (simulator/radio.py): the figures of a BLE link.

The radio plays the central's controller and the peripheral's; what a real pair of them spends
in time is these figures (docs/ble-timing.md gives each one's source, or says it is an
assumption):

- Adverts: a peripheral advertises every ``adv_interval_s`` (its own: a lock kind's, the
  ``Peripheral.adv_interval_s`` attribute, unless the timing fixes one for all) plus a random
  advDelay of 0-10 ms per advertising event (Core spec, Vol 6 Part B, 4.4.2.2.1). A scanner
  hears an advertising event only inside its scan window (``scan_window_s`` of every
  ``scan_interval_s``) and only if the packet is not lost.
- A connection: the initiator sends CONNECT_IND on the first connectable advert it hears; the
  central's host has the connection then (HCI LE Connection Complete), the first connection
  event comes 1.25 ms plus a transmit window offset (0 to one interval) later, and the link
  layer's own procedures (feature exchange, version, data length) take ``setup_events`` events
  before the first ATT PDU goes.
- On a connection: events every ``conn_interval_s``; a peripheral with ``peripheral_latency``
  sleeps through that many idle events, so a central's first packet after silence waits for
  its next listening event. An ATT request goes at the next event and its answer comes at the
  event after (the peripheral's host answers in time for the next event, not the same one);
  a PDU longer than one link-layer packet (``ll_payload`` bytes: 27 without Data Length
  Extension) is split, ``packets_per_event`` of them in one event. A notification goes at
  the next event.
- Encryption: re-encrypting with a bond is the link layer's start-encryption procedure
  (``encrypt_events`` events); a new pairing is SMP's exchange over ``pair_events`` events
  plus the peripheral's own key computation (``pair_compute_s``), then the encryption.
- Loss: every packet is lost with the probability ``packet_error_rate(rssi)`` (a link-layer
  retransmission: it goes again at the next event, so a loss shows as one interval late); a
  link that hears nothing for ``supervision_timeout_s`` drops.

``realistic()`` is what a battery lock and the bridge's NimBLE (or a hub's BlueZ) do;
``fast()`` is the air that answers at once (every advert every 50 ms, nothing on a connection
costs time), for tests that need speed. ``from_env()`` picks one by ``SIM_BLE_TIMING``.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

#: The environment variable that picks the suite's timing: "realistic" or "fast".
ENV = "SIM_BLE_TIMING"
#: What the suite runs under when ``SIM_BLE_TIMING`` is not set (docs/ble-timing.md, "The
#: suite": the measurement behind the choice).
DEFAULT = "fast"

ADV_DELAY_MAX_S = 0.010  # advDelay: 0-10 ms, random, per advertising event (Core spec)
TRANSMIT_WINDOW_DELAY_S = 0.00125  # after CONNECT_IND, before the transmit window (Core spec)
ATT_HEADER = 3  # opcode + handle of a write or notification
L2CAP_HEADER = 4


@dataclass(frozen=True)
class Timing:
    """One set of the air's figures; see the module docstring. ``instant``: nothing on a
    connection costs time (the fast air: every other connection figure is unused)."""

    name: str
    instant: bool
    adv_interval_s: float | None  # None: each peripheral's own (its lock kind's)
    adv_delay_max_s: float
    scan_interval_s: float
    scan_window_s: float
    conn_interval_s: float
    peripheral_latency: int
    setup_events: int
    ll_payload: int
    packets_per_event: int
    encrypt_events: int
    pair_events: int
    pair_compute_s: float
    supervision_timeout_s: float
    lossy: bool  # whether packet_error_rate applies

    def adv_interval_of(self, peripheral_interval_s: float) -> float:
        return self.adv_interval_s if self.adv_interval_s is not None else peripheral_interval_s

    def next_advert_s(self, interval_s: float, rng: random.Random) -> float:
        """From one advertising event to the next: the interval plus advDelay."""
        return interval_s + rng.uniform(0.0, self.adv_delay_max_s)

    def heard(self, rssi: int, rng: random.Random) -> bool:
        """Whether a scanner hears one advertising event: inside its window and not lost."""
        if self.scan_window_s < self.scan_interval_s and \
                rng.random() >= self.scan_window_s / self.scan_interval_s:
            return False
        return not self.lost(rssi, rng)

    def lost(self, rssi: int, rng: random.Random) -> bool:
        return self.lossy and rng.random() < packet_error_rate(rssi)

    def packets(self, att_bytes: int) -> int:
        """Link-layer packets one ATT PDU of ``att_bytes`` takes (at least one)."""
        return max(1, math.ceil((att_bytes + L2CAP_HEADER) / self.ll_payload))

    def events_for(self, att_bytes: int) -> int:
        """Connection events one ATT PDU takes to cross (its packets, so many per event)."""
        return math.ceil(self.packets(att_bytes) / self.packets_per_event)


def packet_error_rate(rssi: int) -> float:
    """The share of packets lost at this RSSI (dBm): none to speak of in a room, rising near
    a BLE receiver's sensitivity (about -95 dBm at 1 Mbit/s): half at -90, nearly all at -97.
    An assumption shaped on the sensitivity figures (docs/ble-timing.md, "Loss")."""
    return 1.0 / (1.0 + math.exp((rssi + 90.0) / 2.0))


def realistic() -> Timing:
    """The bridge's NimBLE as MicroPython drives it and a battery lock (docs/ble-timing.md):
    scanning continuously (the firmware's 30 ms window every 30 ms; a connect's 10 ms in 10 ms),
    the connection interval NimBLE asks for at its slow end (30-50 ms: 50 ms), no peripheral
    latency, NimBLE's 2.56 s supervision timeout, 27-byte link-layer packets (no Data Length
    Extension on the lock: an assumption) four to an event, re-encryption in 4 events, a
    Secure Connections "Just Works" pairing in 14 events plus 0.2 s of the lock's ECDH."""
    return Timing(name="realistic", instant=False, adv_interval_s=None,
                  adv_delay_max_s=ADV_DELAY_MAX_S, scan_interval_s=0.030, scan_window_s=0.030,
                  conn_interval_s=0.050, peripheral_latency=0, setup_events=2, ll_payload=27,
                  packets_per_event=4, encrypt_events=4, pair_events=14, pair_compute_s=0.2,
                  supervision_timeout_s=2.56, lossy=True)


def fast() -> Timing:
    """The air that answers at once: every peripheral's adverts every 50 ms, connections and
    GATT without delay, pairing and encryption as each peripheral's ``pair_delay_s`` and
    ``encrypt_delay_s`` say, a 0.5 s supervision timeout, nothing lost."""
    return Timing(name="fast", instant=True, adv_interval_s=0.05, adv_delay_max_s=0.0,
                  scan_interval_s=1.0, scan_window_s=1.0, conn_interval_s=0.0,
                  peripheral_latency=0, setup_events=0, ll_payload=251, packets_per_event=1000,
                  encrypt_events=0, pair_events=0, pair_compute_s=0.0,
                  supervision_timeout_s=0.5, lossy=False)


def by_name(name: str) -> Timing:
    if name == "realistic":
        return realistic()
    if name == "fast":
        return fast()
    raise ValueError(f"{ENV} is 'realistic' or 'fast', not {name!r}")


def from_env() -> Timing:
    """The timing ``SIM_BLE_TIMING`` names (DEFAULT when unset)."""
    return by_name(os.environ.get(ENV, "").strip() or DEFAULT)
