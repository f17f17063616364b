"""Every kind edgefleet serves.  Importing this package registers them all."""

from protocol.kinds import core as core
from protocol.kinds import devices as devices
from protocol.kinds import rules as rules
