"""Peers: other systems run on the same images as the course's methods, scored by the same code.

A peer is not trained by the course and is not one of its ``Method``s: it is a function from a
batch of crops (B, 3, H, W) in [0, 1] to a ``handlib.methods.Prediction``, and an optional
extra to install. One peer so far:

================= ================================ ====================================================
peer              function                         install
================= ================================ ====================================================
MediaPipe Hands   ``mediapipe_hands(images)``      ``pip install -e ".[peers]"`` then
                                                   ``python -m handlib fetch-peer mediapipe``
================= ================================ ====================================================

A peer may find no hand in an image: its keypoints there are NaN, and
``handlib.evaluate.score`` scores the images it answered (``Prediction.answered``).
Importing this package imports no peer's own library.
"""
from handlib.peers.mediapipe_hands import fetch_model, mediapipe_hands, resolve_model_path, unavailable_reason

__all__ = ["fetch_model", "mediapipe_hands", "resolve_model_path", "unavailable_reason"]
