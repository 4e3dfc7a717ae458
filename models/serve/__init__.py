"""Ask a trained CMP model things: guided propagation and click-to-mask (Zhan et al. 2019, Sec. 4.3).

* :mod:`models.serve.run` loads a CMP run folder (``results/pretrain/cmp/<run>``): its checkpoint
  with ``weights_only=True``, on CUDA when present, else CPU; a run of another method is refused.
* :mod:`models.serve.engine` is the Python API: :meth:`CMPEngine.propagate` (arrows → dense flow
  and the warped next frame, guided video generation), :meth:`CMPEngine.generate` (repeated
  guidance → a short sequence) and :meth:`CMPEngine.annotate` (positive / negative clicks → mask,
  the authors' semi-automatic annotation demo).
* :mod:`models.serve.clicks` simulates a user (the next click at the centre of the largest error
  region) and holds the non-CMP reference (a geodesic flood from the clicks).
* :mod:`models.serve.gallery`, :mod:`models.serve.server`, :mod:`models.serve.cli`: the web page
  (``motion-ssl serve --run ...``), standard library only, loopback by default.
"""

from models.serve.engine import Annotation, CMPEngine, Prediction, warp_image
from models.serve.run import RunError, load_cmp_run

__all__ = ["Annotation", "CMPEngine", "Prediction", "RunError", "load_cmp_run", "warp_image"]
