"""Pretraining methods, one module each, and the registry ``models.train`` dispatches on.

``METHODS`` maps the run config's ``method`` to a :class:`Method`: the LightningModule class (a
:class:`models.methods.base.PretrainMethod`), the ``models.data`` view its batches come from, and
the function that draws its validation panels, called as
``figures(module, datamodule, out_path, **figures_config)``. Adding a method is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from models.methods.base import PretrainMethod
from models.methods.cmp import CMPModule, write_cmp_panels
from models.methods.cpfs import CPFSModule
from models.methods.flowcls import FlowClsModule, write_flowcls_panels
from models.methods.grouping_figures import write_cpfs_panels, write_s3_panels
from models.methods.motionmask import MotionMaskModule, write_motionmask_panels
from models.methods.s3 import S3Module

__all__ = ["METHODS", "Method", "PretrainMethod", "get_method"]


class Method(NamedTuple):
    module: type[PretrainMethod]
    view: str
    figures: Callable[..., object]


METHODS: dict[str, Method] = {
    "cmp": Method(CMPModule, "cmp", write_cmp_panels),
    "cpfs": Method(CPFSModule, "cpfs", write_cpfs_panels),
    "s3": Method(S3Module, "s3", write_s3_panels),
    "motionmask": Method(MotionMaskModule, "motion_masks", write_motionmask_panels),
    "flowcls": Method(FlowClsModule, "cpfs", write_flowcls_panels),
}


def get_method(name: str) -> Method:
    """The registry entry of ``name``, or a ValueError naming the known methods."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]
