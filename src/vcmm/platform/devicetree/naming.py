"""Device names as Linux gives them, so names in kernel logs and traces match.

Linux's of_device_make_bus_id names a platform device after the first node, from the
device's own up through its parents, whose ``reg`` translates to a CPU address:
``<address in hex>.<node name without unit address>`` (``ae00000.display-subsystem``),
with ``.<bit>`` of a ``mask`` property inserted when the node has one.  The names of
the nodes passed on the way (with their unit addresses) follow, joined by ``:``
(``5c00000.remoteproc:glink-edge:fastrpc``); a device with no translatable address
anywhere above it is named by that chain alone.
"""

from __future__ import annotations

from vcmm.platform.devicetree.address import cpu_address
from vcmm.platform.devicetree.tree import DtNode, DtTree


def linux_name(tree: DtTree, node: DtNode) -> str:
    """The platform-device name Linux gives the device of ``node``."""
    parts: list[str] = []
    current: DtNode | None = node
    while current is not None and current.parent is not None:
        addr = cpu_address(tree, current) if current.has("reg") else None
        if addr is not None:
            if current.has("mask"):
                mask = tree.u32(current, "mask")
                bit = (mask & -mask).bit_length() - 1
                head = f"{addr:x}.{bit:x}.{current.base_name}"
            else:
                head = f"{addr:x}.{current.base_name}"
            return ":".join([head, *parts])
        parts.insert(0, current.name)
        current = current.parent
    return ":".join(parts)
