"""cityedge's hardware-in-the-loop suite and the emulated boards it runs on."""
