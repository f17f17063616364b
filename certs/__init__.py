"""edgefleet PKI: the cloud's certificate authority, node CSRs, join tokens, TLS contexts.

The package is split by what it costs to import, because edgecore runs on small devices:

* ``certs.tls``, ``certs.tokens``, ``certs.keyfiles``, ``certs.rotation``,
  ``certs.clock`` and ``certs.errors`` use only the standard library. edgecore imports
  these at run time.
* ``certs.ca`` and ``certs.csr`` need ``cryptography`` (about 13 MB of resident memory).
  cloudcore imports them at start; edgecore imports ``certs.csr`` only while it joins or
  renews its certificate, and must not keep a reference to it afterwards.

This module deliberately imports nothing so that ``import certs.tls`` stays light.
"""
