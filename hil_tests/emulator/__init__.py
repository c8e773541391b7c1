"""Emulated MicroPython boards: the real MicroPython VM (WebAssembly, under Node.js) with host-side peripherals."""
