"""The MANO hand model: the forward pass (layer), safe file loading (io), the open hand asset
(openhand), the pose prior (prior) and fitting to keypoints (fit)."""
from handlib.mano.io import ManoModel, UnsafePickleError, convert_mano, load_mano, save_mano
from handlib.mano.layer import HandOutput, ManoLayer, default_model_path, lbs

__all__ = ["HandOutput", "ManoLayer", "ManoModel", "UnsafePickleError", "convert_mano", "default_model_path",
           "lbs", "load_mano", "save_mano"]
