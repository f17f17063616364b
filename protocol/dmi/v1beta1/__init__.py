"""Generated from api.proto by scripts/gen-dmi; do not edit the *_pb2* files by hand."""
