# The second route (README.md, "Frozen modules"): the bridge's MicroPython with the firmware's
# modules frozen into the MicroPython image itself, beside what ESP32_GENERIC freezes.
# BRIDGE_BUNDLE names the bundle directory `hubctl build` printed; its .mpy files (app.mpy, the
# modules, wire/) are frozen as they are, so they must be of the build's .mpy version.
# Use: make -C ports/esp32 BOARD_DIR=<this dir> FROZEN_MANIFEST=<this file> BRIDGE_BUNDLE=<dir>
import os

include("$(PORT_DIR)/boards/manifest.py")
freeze_mpy(os.environ["BRIDGE_BUNDLE"])
