"""pocketnet: an experiment platform for compact face recognition.

Importing the package registers its face backbones with timm (``iresnet*``, ``mobilefacenet``,
``pocketnet_*``) as soon as timm is imported (it imports neither torch nor timm itself):
``timm.create_model("pocketnet_s_128", checkpoint_path=...)`` then works.
"""

import os

# ONNX Runtime's telemetry would send DNS queries from a background thread once imported; no
# pocketnet command may touch the network (pocketnet.evaluation.export imports it lazily too).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from pocketnet.timm_hook import register_with_timm  # noqa: E402

register_with_timm()

__version__ = "0.1.0"
