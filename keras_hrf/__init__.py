"""keras_hrf: High-Rank Factorization for small speech-emotion Transformers.

Train with `HRFDense` (a `Dense` with a linear expansion in front of it), then
`reparameterize(model)` merges every expansion away for deployment.
"""

from keras_hrf import audio
from keras_hrf import datasets
from keras_hrf import deploy
from keras_hrf import features
from keras_hrf import layers
from keras_hrf import metrics
from keras_hrf import models
from keras_hrf import recipe
from keras_hrf import training
from keras_hrf import tuning
from keras_hrf.layers.hrf_dense import HRFDense
from keras_hrf.models import Conformer
from keras_hrf.models import ConvTransformer
from keras_hrf.models import SpeechFormer
from keras_hrf.reparameterization import is_reparameterizable
from keras_hrf.reparameterization import reparameterize
from keras_hrf.reparameterization import reparameterized_copy
from keras_hrf.version import __version__

__all__ = [
    "Conformer",
    "ConvTransformer",
    "HRFDense",
    "SpeechFormer",
    "audio",
    "datasets",
    "deploy",
    "features",
    "layers",
    "metrics",
    "models",
    "recipe",
    "training",
    "tuning",
    "is_reparameterizable",
    "reparameterize",
    "reparameterized_copy",
    "__version__",
]
