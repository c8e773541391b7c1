"""The technicians' flashing and provisioning tool (``cityedge flash``): find boards, flash MicroPython,
deploy the app atomically, provision, verify and record. See docs/flashing.md."""
