"""handlib: every method of the handcourse, 3D hand pose estimation from a single RGB image.

See DESIGN.md for the data flow: pose prior -> hand model -> renderer -> samples -> methods ->
metrics -> benchmark.
"""
__version__ = "0.1.0"
