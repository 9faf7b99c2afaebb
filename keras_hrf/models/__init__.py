"""The package's speech-emotion models."""

from keras_hrf.models.conformer import Conformer
from keras_hrf.models.conv_transformer import ConvTransformer
from keras_hrf.models.speech_emotion_model import SpeechEmotionModel
from keras_hrf.models.speechformer import SpeechFormer

__all__ = ["Conformer", "ConvTransformer", "SpeechEmotionModel", "SpeechFormer"]
