"""The DMI v1beta1 contract between edgecore and device mappers: the .proto and its
generated stubs (``protocol.dmi.v1beta1``) and the pure conversions between stored
KubeEdge objects and its messages (``protocol.dmi.convert``)."""
