"""Super-resolution networks: HDSRNet (and its Table I variants) and the baselines SRCNN, HRN and Bicubic.

What a model must provide (training, evaluation, tiled inference and the reports rely on nothing else):

- it is an ``nn.Module`` whose constructor takes ``scale`` (the upscaling factor; a model
  that supports only some factors checks it with ``srlab.scales.check_scale``) and keeps it
  as the attribute ``.scale``;
- ``forward(lr)`` takes float RGB ``(N, 3, h, w)`` NCHW in [0, 255] and returns float RGB
  ``(N, 3, scale * h, scale * w)`` in [0, 255] for any ``h`` and ``w``; the output need not
  be clamped or rounded (scoring quantises it, docs/protocol.md).

Optional, for classic models (SRCNN): ``pre_upsample = True`` with ``forward_upsampled(x)``
taking the MATLAB-bicubic upscaled input (the data modules then crop training patches from the
bicubic upscale of each whole LR image, computed once and cached); ``luma = True`` when that
method works on the Y channel alone (training batches are Y; ``forward`` still maps RGB to RGB,
putting the network's Y back with the bicubic CbCr).

Adding a model is therefore two files: ``srlab/models/<name>.py`` and
``configs/model/<name>.yaml`` (``_target_: srlab.models.<name>.<Class>``, ``scale`` and the
constructor's other arguments).
"""

from srlab.models.bicubic import Bicubic
from srlab.models.dynamic_conv import DynamicConv2d
from srlab.models.hdsrnet import VARIANTS, HDSRNet, VariantSpec
from srlab.models.hrn import HRN
from srlab.models.hrn_reference import HRNReference, load_reference_hrn
from srlab.models.reference import from_reference_checkpoint, load_reference_hdsrnet, to_reference_state_dict
from srlab.models.srcnn import SRCNN

__all__ = [
    "HRN",
    "HRNReference",
    "SRCNN",
    "VARIANTS",
    "Bicubic",
    "DynamicConv2d",
    "HDSRNet",
    "VariantSpec",
    "from_reference_checkpoint",
    "load_reference_hdsrnet",
    "load_reference_hrn",
    "to_reference_state_dict",
]
