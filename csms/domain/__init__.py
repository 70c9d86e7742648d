"""Pure state and decisions of the CSMS: no I/O, no clock, tested as tables."""
