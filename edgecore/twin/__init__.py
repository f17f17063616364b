"""The edge's DeviceTwin: desired and reported values per device property."""
