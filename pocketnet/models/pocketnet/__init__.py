"""PocketNet (NAS-derived face embedding networks): ops, genotypes, cells and the network.

Import :mod:`pocketnet.models.pocketnet.timm_models` to register the presets with timm.
"""

from pocketnet.models.pocketnet.genotype import Genotype, load_genotype, parse_genotype
from pocketnet.models.pocketnet.network import PRESETS, PocketNet, build_pocketnet

__all__ = ["PRESETS", "Genotype", "PocketNet", "build_pocketnet", "load_genotype", "parse_genotype"]
