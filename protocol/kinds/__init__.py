"""Every kind edgefleet serves.  Importing this package registers them all."""

from protocol.kinds import appreplicas as appreplicas
from protocol.kinds import apps as apps
from protocol.kinds import core as core
from protocol.kinds import devices as devices
from protocol.kinds import nodegroups as nodegroups
from protocol.kinds import policies as policies
from protocol.kinds import rules as rules
from protocol.kinds import scheduling as scheduling
