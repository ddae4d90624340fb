"""Keras -> TensorFlow Lite, and running .tflite files with LiteRT.

>>> tflite_bytes = to_tflite(model, quantize="float16")      # doctest: +SKIP
>>> LiteRTModel(tflite_bytes)(batch)                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as tfl

from cbr_lite.errors import CbrError

QUANTIZATIONS = ("none", "float16", "int8", "int8-full")


def to_tflite(model, quantize: str = "none", representative=None) -> bytes:
    """Convert a Keras model to a .tflite flatbuffer.

    ``quantize``: ``"none"`` keeps float32; ``"float16"`` stores weights as float16 (half the size);
    ``"int8"`` is dynamic-range quantisation: weights stored as int8 with per-channel scales, activations
    float, so both the embedder and the retrieval matrix shrink about 4x. ``"int8-full"`` is full-integer
    quantisation for accelerators that run only integers (Edge TPU, NNAPI, many NPUs): weights *and*
    activations int8, calibrated on ``representative`` (a float32 batch of typical model inputs), and a
    ``uint8`` input whose quantisation parameters do the normalising, so the model takes raw pixels. The
    scores stay float32. Ops without an integer kernel (the L2 normalisation's square root and division)
    run in float between a dequantise and a quantise; LiteRT and MediaPipe run such files, a strict
    accelerator runs the integer part and hands the rest to the CPU.

    A model with several outputs (a dict of them, as the IVF head's) gets them in the file in the order
    of their names, which is also the order Keras lists a dict's outputs in; the converter's own order
    depends on the graph. Readers that go by position (MediaPipe reads output 0 first) then see a fixed
    order.
    """
    if quantize not in QUANTIZATIONS:
        raise CbrError(f"unknown quantisation {quantize!r}: use one of {', '.join(QUANTIZATIONS)}")
    if quantize == "int8-full" and (representative is None or len(representative) == 0):
        raise CbrError("full-integer quantisation needs representative inputs to calibrate on")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    from cbr_lite.notebook import quietly

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8-full":
        batch = np.asarray(representative, dtype=np.float32)
        converter.representative_dataset = lambda: ([item[None]] for item in batch)
        converter.inference_input_type = tf.uint8
    # The converter prints where it saved a temporary SavedModel (with object ids that change every run).
    with quietly():
        return outputs_in_name_order(converter.convert())


def output_names(tflite_bytes) -> list[str]:
    """The names of a .tflite model's outputs (from its signature), in the order of its output tensors."""
    model = tfl.Model.GetRootAs(tflite_bytes, 0)
    graph = model.Subgraphs(0)
    if not model.SignatureDefsLength():
        return [f"output_{i}" for i in range(graph.OutputsLength())]
    signature = model.SignatureDefs(0)
    by_tensor = {signature.Outputs(i).TensorIndex(): signature.Outputs(i).Name().decode()
                 for i in range(signature.OutputsLength())}
    return [by_tensor.get(graph.Outputs(i), f"output_{i}") for i in range(graph.OutputsLength())]


def outputs_in_name_order(tflite_bytes) -> bytes:
    """The model with its output tensors listed in the order of their signature names (same length, so
    the list is rewritten in place and nothing else in the file moves)."""
    names = output_names(tflite_bytes)
    if names == sorted(names):
        return bytes(tflite_bytes)
    data = bytearray(tflite_bytes)
    outputs = tfl.Model.GetRootAs(data, 0).Subgraphs(0).OutputsAsNumpy()  # a view into ``data``
    by_name = dict(zip(names, outputs.tolist()))
    outputs[:] = [by_name[name] for name in sorted(names)]
    return bytes(data)


class LiteRTModel:
    """A .tflite model run with LiteRT (``ai_edge_litert``): one input tensor, one or more output tensors.

    Calling it on a batch runs the model on each item (TFLite models are built for batch 1) and stacks
    the first output; :meth:`run_outputs` gives every output by name.
    """

    def __init__(self, model, num_threads: int | None = None):
        """``model``: .tflite bytes or a path. ``num_threads``: LiteRT's CPU threads (default: all cores)."""
        from ai_edge_litert.interpreter import Interpreter

        from cbr_lite.notebook import stderr_silenced

        where = f"{model}: " if isinstance(model, (str, Path)) else ""
        try:
            self.model_bytes = Path(model).read_bytes() if where else bytes(model)
        except OSError as error:
            raise CbrError(f"{where}cannot read the model file ({error.strerror or type(error).__name__})") from None
        if not self.model_bytes:
            raise CbrError(f"{where}the model is empty (0 bytes), not a TensorFlow Lite model")
        try:
            # LiteRT announces its XNNPACK delegate on stderr, which would reach notebooks and CLI output.
            with stderr_silenced():
                self.interpreter = Interpreter(model_content=self.model_bytes, num_threads=num_threads or os.cpu_count())
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise CbrError(
                f"{where}not a TensorFlow Lite model LiteRT can run ({str(error).splitlines()[0]})"
            ) from None
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.output = self.outputs[0]
        #: The outputs' names from the model's signature, in output order (``output_0``... without one).
        self.output_names = output_names(self.model_bytes)

    @property
    def input_shape(self) -> tuple:
        """Shape of one input, batch dimension included (usually 1)."""
        return tuple(int(n) for n in self.input["shape"])

    def run_one(self, item: np.ndarray) -> np.ndarray:
        """Run the model on one input (with or without its batch dimension of 1); returns the output row."""
        item = np.asarray(item, dtype=self.input["dtype"]).reshape(self.input["shape"])
        self.interpreter.set_tensor(self.input["index"], item)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"])[0].copy()

    def run_outputs(self, item: np.ndarray) -> dict:
        """Run the model on one input; returns ``{output name: output row}`` for every output."""
        self.run_one(item)
        return {name: self.interpreter.get_tensor(output["index"])[0].copy()
                for name, output in zip(self.output_names, self.outputs)}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return np.stack([self.run_one(item) for item in np.asarray(batch)])

    def ops(self) -> list[str]:
        """The op names of the model, in execution order (e.g. ``FULLY_CONNECTED``, ``GATHER``)."""
        # LiteRT lists the nodes it handed to a delegate (XNNPACK) a second time as DELEGATE.
        return [op["op_name"] for op in self.interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
