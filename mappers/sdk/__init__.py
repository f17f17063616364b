"""What every edgefleet mapper shares: the DMI client and server (``mappers.sdk.dmi``),
the device loops (``mappers.sdk.runtime``) and when they poll (``mappers.sdk.schedule``)."""
