"""Real photos shared by the pretrained-weight tests."""
import numpy as np
import pytest
import skimage.data

from research.transfer import pretrained

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
# ImageNet classes: 285 Egyptian cat, 967 espresso.
EXPECTED_TOP1 = {"chelsea": 285, "coffee": 967}


@pytest.fixture(scope="session")
def photos():
  """(names, float32 [4, 224, 224, 3] ImageNet-normalised, expected top-1)."""
  batch = np.stack([pretrained.preprocess(getattr(skimage.data, name)(), 224)
                    for name in PHOTOS])
  return PHOTOS, batch, EXPECTED_TOP1
