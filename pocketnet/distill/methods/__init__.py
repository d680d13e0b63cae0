"""KD methods, one file each: its config schema, its weighted and named loss terms, any modules
it trains with their own optimiser, and its set-up checks (:class:`KDMethod`). A method
registers itself with ``@KD_METHODS.register("<name>")`` and is chosen by ``kd=<name>``
(``conf/kd/<name>.yaml``); the student stage knows no method by name."""

from pocketnet.distill.methods.base import KD_METHODS, Adversary, KDContext, KDMethod, KDSetup

__all__ = ["KD_METHODS", "Adversary", "KDContext", "KDMethod", "KDSetup"]
