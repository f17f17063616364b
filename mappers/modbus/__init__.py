"""Modbus mapper: KubeEdge Device/DeviceModel configData → register reads and writes.

Pure parts: ``codec`` (registers ↔ values), ``config`` (configData parsing), ``plan``
(coalescing reads).  Device-facing parts: ``bus`` (one serialised request queue per
physical bus), ``points`` (read/write properties through a bus) and
``simulator`` (a Modbus TCP/RTU thermostat for demos and tests).
"""
