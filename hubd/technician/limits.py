"""The bounds of what a technician types into a request to hubd (hubctl pair --seconds, hubctl
test-alarm --timeout), without pydantic: hubctl's command line shows and checks them before
hubd is asked, and must not load hubd's models for it (each hubctl is a process, and those
models are most of its start: build and flash never use them).
hubd.technician.control's requests check the same bounds again on hubd's side."""

#: A scan listens this long unless told (``hubctl pair --seconds``), and at most MAX_SCAN_S.
SCAN_S = 8
MAX_SCAN_S = 30
#: hubd's wait for the alarm centre's "handled" of a test alarm, by default and at most.
TEST_ALARM_WAIT_S = 120
TEST_ALARM_WAIT_RANGE_S = (5, 600)
