"""The passphrase that encrypts the CA private key at rest (``pki/ca.key``).

Optional. It comes from one of two places, never both:

* ``pki.caKeyPassphraseFile`` in the config file: a file only its owner may read (mode
  0600, checked like a private key), for secrets mounted by a supervisor or an
  orchestrator.  One final newline is dropped: editors add one, nobody means it.
* the ``EDGEFLEET_CA_PASSPHRASE`` environment variable.

The first start that has a passphrase writes the CA key encrypted with it; every later
start must give the same one.  The passphrase never appears in a message or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from certs.errors import CertError
from certs.keyfiles import read_private

PASSPHRASE_ENV = "EDGEFLEET_CA_PASSPHRASE"


def ca_key_passphrase(passphrase_file: Path | None, environ: Mapping[str, str]) -> bytes | None:
    """The CA key passphrase, or None when none is configured.

    Raises CertError when it is configured twice, when the file is missing or readable
    by group or others (InsecureKeyFile), or when it is empty.
    """
    from_env = environ.get(PASSPHRASE_ENV)
    if passphrase_file is not None and from_env is not None:
        raise CertError(
            f"the CA key passphrase is given twice, by pki.caKeyPassphraseFile and by "
            f"${PASSPHRASE_ENV}; keep one of them"
        )
    if passphrase_file is not None:
        value = read_private(passphrase_file, what="CA key passphrase file")
        if value.endswith(b"\r\n"):
            value = value[:-2]
        elif value.endswith(b"\n"):
            value = value[:-1]
        source = f"the CA key passphrase file {passphrase_file}"
    elif from_env is not None:
        value = from_env.encode()
        source = f"${PASSPHRASE_ENV}"
    else:
        return None
    if not value:
        raise CertError(f"{source} is empty; give a passphrase or remove the setting")
    return value
