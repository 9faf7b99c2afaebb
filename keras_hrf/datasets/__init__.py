"""Dataset manifests: IEMOCAP, M3ED, DAIC-WOZ, EmoDB, RAVDESS, CREMA-D, MSP-Podcast, class
folders, CSV manifests."""

from keras_hrf.datasets.daic_woz import DAIC_CLASSES
from keras_hrf.datasets.daic_woz import load_daic_woz
from keras_hrf.datasets.daic_woz import participant_votes
from keras_hrf.datasets.crema_d import CREMA_D_EMOTIONS
from keras_hrf.datasets.crema_d import load_crema_d

from keras_hrf.datasets.emodb import EMODB_EMOTIONS
from keras_hrf.datasets.emodb import load_emodb
from keras_hrf.datasets.iemocap import IEMOCAP_CLASS_SETS
from keras_hrf.datasets.iemocap import load_iemocap
from keras_hrf.datasets.manifest import DIMENSION_COLUMNS
from keras_hrf.datasets.manifest import MANIFEST_COLUMNS
from keras_hrf.datasets.manifest import DatasetError
from keras_hrf.datasets.manifest import class_names
from keras_hrf.datasets.manifest import from_folder
from keras_hrf.datasets.manifest import make_manifest
from keras_hrf.datasets.manifest import read_manifest
from keras_hrf.datasets.m3ed import M3ED_CLASSES
from keras_hrf.datasets.m3ed import load_m3ed
from keras_hrf.datasets.msp_podcast import MSP_PODCAST_EMOTIONS
from keras_hrf.datasets.msp_podcast import MSP_PODCAST_FOUR_CLASSES
from keras_hrf.datasets.msp_podcast import load_msp_podcast
from keras_hrf.datasets.ravdess import RAVDESS_EMOTIONS
from keras_hrf.datasets.ravdess import load_ravdess
from keras_hrf.datasets.ravdess import ravdess_fold

__all__ = [
    "CREMA_D_EMOTIONS",
    "DIMENSION_COLUMNS",
    "MSP_PODCAST_EMOTIONS",
    "MSP_PODCAST_FOUR_CLASSES",
    "load_crema_d",
    "load_msp_podcast",
    "DAIC_CLASSES",
    "M3ED_CLASSES",
    "load_daic_woz",
    "load_m3ed",
    "participant_votes",
    "DatasetError",
    "EMODB_EMOTIONS",
    "IEMOCAP_CLASS_SETS",
    "RAVDESS_EMOTIONS",
    "MANIFEST_COLUMNS",
    "class_names",
    "from_folder",
    "load_emodb",
    "load_iemocap",
    "load_ravdess",
    "ravdess_fold",
    "make_manifest",
    "read_manifest",
]
