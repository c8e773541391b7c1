"""I2C sensor drivers for the node apps (small, allocation-free reads into preallocated buffers)."""
