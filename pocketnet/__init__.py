"""pocketnet: an experiment platform for compact face recognition.

Importing the package registers its face backbones with timm (``iresnet*``, ``mobilefacenet``,
``pocketnet_*``): ``timm.create_model("pocketnet_s_128", checkpoint_path=...)`` then works.
"""

from pocketnet.models import timm_models as _timm_models  # noqa: F401  (registers the names)

__version__ = "0.1.0"
