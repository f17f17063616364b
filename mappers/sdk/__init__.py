"""What every edgefleet mapper shares: the DMI client and server (``mappers.sdk.dmi``)."""
