"""The MANO hand model: the forward pass (layer), file loading (io), and the open hand asset."""
from handlib.mano.io import ManoModel, UnsafePickleError, convert_mano, load_mano, save_mano
from handlib.mano.layer import HandOutput, ManoLayer, default_model_path, lbs

__all__ = ["HandOutput", "ManoLayer", "ManoModel", "UnsafePickleError", "convert_mano", "default_model_path",
           "lbs", "load_mano", "save_mano"]
