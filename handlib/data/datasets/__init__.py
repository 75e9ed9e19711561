"""Loaders for real hand datasets, each returning the course's sample structure
(``handlib.data.sample.make_sample``) in the course's 21-keypoint order.

None of these datasets ships with handlib (their licences are research / non-commercial only);
each loader's error for a missing folder says where to download it.

=================== ================== ==========================================================
class               dataset            what it has
=================== ================== ==========================================================
FreiHAND            FreiHAND v2        real photos, 3D keypoints, K, MANO, masks
FreiHANDKeypoints2D FreiHAND (mmpose)  the same photos, 2D keypoints only
RHD                 RHD v1.1 original  synthetic renders, 3D, K, depth, part masks
RHDCoco             RHD (mmpose json)  synthetic renders, 3D, K
STB                 STB                real photos (stereo + RGB-D), 3D, K; palm root -> wrist
InterHand26M        InterHand2.6M      real photos, 3D in a calibrated multi-camera studio
CMUHands2D          CMU hands (mmpose) real photos, 2D only
=================== ================== ==========================================================

Pixel coordinates follow the renderer's convention (pixel column j covers u in [j, j + 1));
FreiHAND's and RHD's principal points sit at W / 2 = 112 and 160, which fits it. The stored 2D
annotations are used as they are.

``crop_to_hand`` cuts a square around the hand and resizes it (K and keypoints_2d follow);
``mirror_sample`` turns a left hand into a right one.
"""
from .cmu import CMUHands2D
from .crop import crop_to_hand, hand_box, mirror_sample
from .freihand import FreiHAND, FreiHANDKeypoints2D
from .interhand import InterHand26M
from .rhd import RHD, RHDCoco
from .stb import STB

__all__ = ["CMUHands2D", "FreiHAND", "FreiHANDKeypoints2D", "InterHand26M", "RHD", "RHDCoco", "STB",
           "crop_to_hand", "hand_box", "mirror_sample"]
