"""The cloud's resource store: one interface, an sqlite backend (etcd comes later)."""
