"""hubctl: the technician's tool for a bridge (an ESP32 running the firmware in firmware/).

- ``bundle``: the firmware compiled with mpy-cross into a versioned bundle with a manifest (the
  simulator runs the same bundle);
- ``image``: the MicroPython image written with esptool, behind a small seam;
- ``deploy``: the bundle and bridge.json copied onto the bridge with mpremote, each file verified
  by hash and resumable after a cut;
- ``__main__``: the command line (typer, rich progress bars).

Only ``bundle`` is needed by the simulator; it uses nothing outside the standard library.
"""
