"""vlens.world: a procedurally generated image world with ground truth and planted biases.

from vlens.world import WorldConfig, generate, make_dataset
for item in generate("demo_train", n=10, seed=0):
    item.image, item.mask, item.attrs
"""

from vlens.world.attributes import ATTRIBUTES
from vlens.world.captions import SYNONYMS, caption
from vlens.world.config import WorldConfig
from vlens.world.dataset import make_dataset, read_manifest
from vlens.world.generator import WorldItem, bias_groups, generate, make_item

__all__ = [
    "ATTRIBUTES",
    "SYNONYMS",
    "WorldConfig",
    "WorldItem",
    "bias_groups",
    "caption",
    "generate",
    "make_dataset",
    "make_item",
    "read_manifest",
]
