"""Code cbr-lite ships unchanged from elsewhere, with its licence (see each file's header).

- ``metadata_schema_py_generated.py``: the Python classes the FlatBuffers compiler generates from the
  public TFLite metadata schema ``metadata_schema.fbs`` (both from the mediapipe 1.2.3 wheel, Apache-2.0).
  :mod:`cbr_lite.metadata` writes and reads TFLite metadata with them.
"""
