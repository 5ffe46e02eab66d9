"""hubd's end of the host link as firmware/uplink.py sees it, for the firmware's own tests inside
MicroPython (mp_test_uplink.py, mp_test_fuzz_lte.py): what the uplink sent (messages decoded,
bulk payloads as they are) and a link that is up, with room for bulk unless told otherwise."""

from wire import link, messages


class Host:
    waiting = False  # bulk the uplink queued has not entered the link's window yet

    def __init__(self):
        self.sent = []
        self.link = link.Link(0x42, "t", 0, b"k" * 32)
        self.link.state = link.UP

    def send(self, payload):
        self.sent.append(messages.decode(payload))

    def send_bulk(self, payload):
        self.sent.append(payload)

    def bulk_room(self):
        return 4

    def bulk_waiting(self):
        return self.waiting
