"""Keras -> TensorFlow Lite, and running .tflite files with LiteRT.

>>> tflite_bytes = to_tflite(model, quantize="float16")      # doctest: +SKIP
>>> LiteRTModel(tflite_bytes)(batch)                          # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cbr_lite.errors import CbrError, first_line

QUANTIZATIONS = ("none", "float16", "int8", "int8-full")


def check_quantize(quantize: str) -> str:
    """``quantize`` if it is one of :data:`QUANTIZATIONS`, else a :class:`CbrError` listing them."""
    if quantize not in QUANTIZATIONS:
        raise CbrError(f"unknown quantisation {quantize!r}: use one of {', '.join(QUANTIZATIONS)}")
    return quantize


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
    from cbr_lite.quiet import import_tensorflow_quietly, quietly

    check_quantize(quantize)
    if quantize == "int8-full" and (representative is None or len(representative) == 0):
        raise CbrError("full-integer quantisation needs representative inputs to calibrate on")
    import_tensorflow_quietly()
    import tensorflow as tf

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


def outputs_in_name_order(tflite_bytes) -> bytes:
    """The model with its output tensors listed in the order of their signature names (same length, so
    the list is rewritten in place and nothing else in the file moves)."""
    from ai_edge_litert import schema_py_generated as tfl  # here: the command line imports this module

    from cbr_lite.metadata import output_names

    names = output_names(tflite_bytes)
    if names == sorted(names):
        return bytes(tflite_bytes)
    data = bytearray(tflite_bytes)
    outputs = tfl.Model.GetRootAs(data, 0).Subgraphs(0).OutputsAsNumpy()  # a view into ``data``
    by_name = dict(zip(names, outputs.tolist()))
    outputs[:] = [by_name[name] for name in sorted(names)]
    return bytes(data)


#: The most memory a model's computed (non-constant) tensors may need together, checked before LiteRT
#: allocates them: a damaged or hostile file can declare a tensor of any shape. EfficientNet-Lite0 needs
#: about 60 MB by this count.
MAX_WORKING_BYTES = 2**31


def _check_working_memory(model_bytes: bytes, where: str) -> None:
    from ai_edge_litert import schema_py_generated as tfl  # here: the command line imports this module

    try:
        model = tfl.Model.GetRootAs(model_bytes, 0)
        total = 0
        for g in range(model.SubgraphsLength()):
            graph = model.Subgraphs(g)
            for t in range(graph.TensorsLength()):
                tensor = graph.Tensors(t)
                buffer = tensor.Buffer()
                if buffer and model.Buffers(buffer).DataLength():
                    continue  # a constant: its bytes are in the file already
                shape = tensor.ShapeAsNumpy() if tensor.ShapeLength() else []
                total += int(np.prod([max(int(d), 1) for d in shape], dtype=object)) * 8  # at most 8 bytes each
    except Exception:  # noqa: BLE001 - a damaged FlatBuffer: LiteRT's own checks report it below
        return
    if total > MAX_WORKING_BYTES:
        raise CbrError(f"{where}the model's tensors would need {total:,} bytes of memory, more than the "
                       f"{MAX_WORKING_BYTES:,}-byte limit; the file is damaged or not a model cbr-lite runs")


class LiteRTModel:
    """A .tflite model run with LiteRT (``ai_edge_litert``): one input tensor, one or more output tensors.

    Calling it on a batch runs the model on each item (TFLite models are built for batch 1) and stacks
    the first output; :meth:`run_outputs` gives every output by name.
    """

    def __init__(self, model, num_threads: int | None = None, source: str | None = None):
        """``model``: .tflite bytes or a path. ``num_threads``: LiteRT's CPU threads (default: all cores).
        ``source`` names the model in error messages (default: its path, if given one)."""
        from ai_edge_litert.interpreter import Interpreter

        from cbr_lite.metadata import output_names
        from cbr_lite.quiet import stderr_silenced

        if isinstance(model, (str, Path)):
            from cbr_lite.classifier_file import read_model_file

            source = source or str(model)
            model = read_model_file(model)
        self.where = where = f"{source}: " if source else ""
        self.model_bytes = bytes(model)
        if not self.model_bytes:
            raise CbrError(f"{where}the model is empty (0 bytes), not a TensorFlow Lite model")
        _check_working_memory(self.model_bytes, where)
        try:
            # LiteRT announces its XNNPACK delegate on stderr, which would reach notebooks and CLI output.
            with stderr_silenced():
                self.interpreter = Interpreter(model_content=self.model_bytes, num_threads=num_threads or os.cpu_count())
                self.interpreter.allocate_tensors()
            # Tensor names are decoded as UTF-8 here: a damaged name is a UnicodeDecodeError (a ValueError).
            self.input = self.interpreter.get_input_details()[0]
            self.outputs = self.interpreter.get_output_details()
            self.output = self.outputs[0]
            #: The outputs' names from the model's signature, in output order (``output_0``... without one).
            self.output_names = output_names(self.model_bytes)
        except (ValueError, RuntimeError, IndexError) as error:
            raise CbrError(f"{where}not a TensorFlow Lite model LiteRT can run ({first_line(error)})") from None

    @property
    def input_shape(self) -> tuple:
        """Shape of one input, batch dimension included (usually 1)."""
        return tuple(int(n) for n in self.input["shape"])

    def run_one(self, item: np.ndarray) -> np.ndarray:
        """Run the model on one input (with or without its batch dimension of 1); returns the output row."""
        try:
            item = np.asarray(item, dtype=self.input["dtype"]).reshape(self.input["shape"])
            self.interpreter.set_tensor(self.input["index"], item)
            self.interpreter.invoke()
            return self.interpreter.get_tensor(self.output["index"])[0].copy()
        except (ValueError, RuntimeError) as error:  # a damaged network fails here, not when it was loaded
            raise CbrError(f"{self.where}LiteRT cannot run this model ({first_line(error)})") from None

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
        try:
            return [op["op_name"] for op in self.interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]
        except (ValueError, RuntimeError) as error:  # a damaged op or tensor name
            raise CbrError(f"{self.where}the model's ops cannot be listed ({first_line(error)})") from None
