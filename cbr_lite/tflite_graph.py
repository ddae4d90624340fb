"""Joining two TFLite networks into one, and cutting a classifier back to its embedder, without TensorFlow.

A cbr-lite classifier is two networks in one graph: the embedder (image -> embedding) and the retrieval
head (embedding -> class scores). They are converted to TFLite separately and joined here, the
embedder's operators first, so the file can later be cut at that boundary again: ``cbr-lite remove``
keeps the network the file holds (:func:`embedder_part`) and joins it to a new head, with no embedder
loaded by name and no Keras model needed.

>>> classifier = join(embedder_tflite, head_tflite)                  # doctest: +SKIP
>>> embedder_part(classifier, embedder_ops=count_operators(embedder_tflite)) == ...  # doctest: +SKIP

Both work on the object API of the TFLite schema (``ai_edge_litert.schema_py_generated``): tensors,
buffers and operator codes of the second network are appended to the first's and renumbered.
"""

from __future__ import annotations

import copy

from ai_edge_litert import schema_py_generated as tfl

from cbr_lite.errors import CbrError

#: The model metadata entry cbr_lite.metadata writes (other entries describe the converted network).
_OUR_METADATA = "TFLITE_METADATA"


def count_operators(tflite: bytes) -> int:
    """The number of operators in a one-subgraph TFLite model."""
    return len(_model(tflite, "the network").subgraphs[0].operators or [])


def join(first: bytes, second: bytes) -> bytes:
    """One TFLite model computing ``second(first(x))``: ``first``'s only output feeds ``second``'s only input.

    The result has ``first``'s input and ``second``'s output, ``first``'s operators followed by
    ``second``'s, ``first``'s model metadata (converter version, runtime needed), and a
    ``serving_default`` signature named from ``first``'s inputs and ``second``'s outputs. Raises
    :class:`CbrError` if the two do not fit (shapes, types, several subgraphs).
    """
    a = _compact(_model(first, "the embedder network"))
    b = _compact(_model(second, "the head network"))
    ga, gb = a.subgraphs[0], b.subgraphs[0]
    if len(ga.outputs) != 1 or len(gb.inputs) != 1:
        raise CbrError("only a network with one output can be joined to one with one input")
    out, into = ga.tensors[ga.outputs[0]], gb.tensors[gb.inputs[0]]
    shapes = [[int(d) for d in (tensor.shape if tensor.shape is not None else [])] for tensor in (out, into)]
    if shapes[0] != shapes[1] or out.type != into.type:
        raise CbrError(f"the networks do not fit: {shapes[0]} output into {shapes[1]} input")

    joined = copy.copy(a)
    joined.operatorCodes = list(a.operatorCodes)
    code_of = [_code_index(joined.operatorCodes, code) for code in b.operatorCodes]
    # Buffer 0 is the empty buffer every TFLite file starts with; tensors without data point at it.
    buffer_of = [0] + list(range(len(a.buffers), len(a.buffers) + len(b.buffers) - 1))
    joined.buffers = list(a.buffers) + list(b.buffers[1:])
    graph = copy.copy(ga)
    graph.tensors = list(ga.tensors)
    tensor_of = {gb.inputs[0]: ga.outputs[0]}
    for index, tensor in enumerate(gb.tensors):
        if index not in tensor_of:
            tensor_of[index] = len(graph.tensors)
            graph.tensors.append(_with_buffer(tensor, buffer_of[tensor.buffer]))
    graph.operators = list(ga.operators) + [_renumbered(op, code_of, tensor_of) for op in gb.operators]
    graph.outputs = [tensor_of[t] for t in gb.outputs]
    joined.subgraphs = [graph]
    joined.signatureDefs = [_signature(_names(a, "inputs", ga.inputs), _names(b, "outputs", gb.outputs, tensor_of))]
    _keep_newest_runtime_version(joined, a, b)
    return _pack(joined)


def embedder_part(classifier: bytes, embedder_ops: int, dim: int, source: str = "the model") -> bytes:
    """The first ``embedder_ops`` operators of a joined classifier, as a model of their own whose output
    is the one tensor they pass to the rest (the embedding): the ``first`` that :func:`join` was given,
    up to the numbering of what it did not use.

    ``embedder_ops`` comes from the file (``cbr.json``), so it is checked: exactly one tensor must cross
    the cut, a float32 ``(1, dim)`` embedding, and the cut must leave operators on both sides.
    """
    model = _model(classifier, source)
    graph = model.subgraphs[0]
    operators = list(graph.operators or [])
    if not isinstance(embedder_ops, int) or not 0 < embedder_ops < len(operators):
        raise CbrError(f"{source}: its cbr.json does not say where its embedder ends; build it again")
    produced = {t for op in operators[:embedder_ops] for t in _tensors(op)["outputs"]}
    crossing = sorted(produced & {t for op in operators[embedder_ops:] for t in _tensors(op)["inputs"]})
    embedding = graph.tensors[crossing[0]] if len(crossing) == 1 else None
    if (embedding is None or crossing[0] in {int(t) for t in graph.outputs} or embedding.type != tfl.TensorType.FLOAT32
            or embedding.shape is None or [int(d) for d in embedding.shape] != [1, dim]):
        raise CbrError(f"{source}: its network cannot be cut where its cbr.json says the embedder ends; build it again")
    part = copy.copy(model)
    cut = copy.copy(graph)
    cut.operators, cut.outputs = operators[:embedder_ops], [crossing[0]]
    part.subgraphs = [cut]
    names = _names(model, "inputs", graph.inputs)
    part = _compact(part)
    part.signatureDefs = [_signature(dict(zip(names, part.subgraphs[0].inputs)), {"embedding": part.subgraphs[0].outputs[0]})]
    return _pack(part)


def _compact(model):
    """A copy of a one-subgraph model with only the tensors its operators and inputs/outputs use, the
    buffers those tensors and its network metadata use, and the operator codes its operators use, each
    in their old order. Our own metadata (``TFLITE_METADATA``) is dropped: the metadata writer adds it."""
    graph = model.subgraphs[0]
    operators = list(graph.operators or [])
    used = sorted({int(t) for t in list(graph.inputs) + list(graph.outputs)}
                  | {t for op in operators for ts in _tensors(op).values() for t in ts})
    tensor_of = {old: new for new, old in enumerate(used)}
    entries = [entry for entry in model.metadata or [] if _name(entry) != _OUR_METADATA]
    buffers = sorted({0} | {graph.tensors[t].buffer for t in used} | {entry.buffer for entry in entries})
    buffer_of = {old: new for new, old in enumerate(buffers)}
    codes = sorted({op.opcodeIndex for op in operators})
    code_of = {old: new for new, old in enumerate(codes)}

    compact = copy.copy(model)
    compact.operatorCodes = [model.operatorCodes[i] for i in codes]
    compact.buffers = [model.buffers[i] for i in buffers] if model.buffers else [tfl.BufferT()]
    small = copy.copy(graph)
    small.tensors = [_with_buffer(graph.tensors[t], buffer_of[graph.tensors[t].buffer]) for t in used]
    small.operators = [_renumbered(op, code_of, tensor_of) for op in operators]
    small.inputs = [tensor_of[int(t)] for t in graph.inputs]
    small.outputs = [tensor_of[int(t)] for t in graph.outputs]
    compact.subgraphs = [small]
    compact.metadata = []
    for entry in entries:
        entry = copy.copy(entry)
        entry.buffer = buffer_of[entry.buffer]
        compact.metadata.append(entry)
    # Signatures name tensors by index: renumber them too (inputs and outputs are kept).
    compact.signatureDefs = []
    for signature in model.signatureDefs or []:
        signature = copy.copy(signature)
        for field in ("inputs", "outputs"):
            maps = []
            for entry in getattr(signature, field) or []:
                if int(entry.tensorIndex) in tensor_of:
                    entry = copy.copy(entry)
                    entry.tensorIndex = tensor_of[int(entry.tensorIndex)]
                    maps.append(entry)
            setattr(signature, field, maps)
        compact.signatureDefs.append(signature)
    return compact


def _tensors(operator) -> dict:
    """An operator's tensor indices (``-1``, an optional input left out, dropped), by field."""
    return {field: [int(t) for t in (getattr(operator, field) if getattr(operator, field) is not None else []) if t >= 0]
            for field in ("inputs", "outputs", "intermediates")}


def _renumbered(operator, code_of, tensor_of):
    operator = copy.copy(operator)
    operator.opcodeIndex = code_of[operator.opcodeIndex]
    for field in ("inputs", "outputs", "intermediates"):
        values = getattr(operator, field)
        if values is not None and len(values):
            setattr(operator, field, [tensor_of[int(t)] if t >= 0 else -1 for t in values])
    return operator


def _with_buffer(tensor, buffer: int):
    tensor = copy.copy(tensor)
    tensor.buffer = buffer
    return tensor


def _model(tflite: bytes, source: str):
    try:
        model = tfl.ModelT.InitFromObj(tfl.Model.GetRootAs(bytes(tflite), 0))
    except Exception:  # noqa: BLE001 - the generated reader raises anything on damaged bytes
        raise CbrError(f"{source}: its TFLite network is damaged; build it again") from None
    if len(model.subgraphs or []) != 1:
        raise CbrError(f"{source}: has {len(model.subgraphs or [])} subgraphs; cbr-lite joins one-subgraph networks")
    if any((buffer.offset or 0) > 1 for buffer in model.buffers or []):
        raise CbrError(f"{source}: keeps weights outside the FlatBuffer (over 2 GB), which is not supported")
    if not _indices_fit(model):
        raise CbrError(f"{source}: its TFLite network refers to tensors, buffers or operators it does not have; "
                       "the file is damaged")
    return model


def _indices_fit(model) -> bool:
    """Whether every index in the model points at something it has (a damaged file's may point anywhere)."""
    graph = model.subgraphs[0]
    tensors, buffers, codes = len(graph.tensors or []), len(model.buffers or []), len(model.operatorCodes or [])
    graph.tensors, graph.operators = graph.tensors or [], graph.operators or []
    graph.inputs = [] if graph.inputs is None else graph.inputs
    graph.outputs = [] if graph.outputs is None else graph.outputs
    ends = [int(t) for t in list(graph.inputs) + list(graph.outputs)]
    inside = [t for op in graph.operators for ts in _tensors(op).values() for t in ts]
    return (all(0 <= t < tensors for t in ends + inside)
            and all(0 <= op.opcodeIndex < codes for op in graph.operators)
            and all(0 <= tensor.buffer < max(buffers, 1) for tensor in graph.tensors)
            and all(0 <= entry.buffer < buffers for entry in model.metadata or []))


def _code_index(codes: list, code) -> int:
    key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
    for index, known in enumerate(codes):
        if (known.builtinCode, known.deprecatedBuiltinCode, known.customCode, known.version) == key:
            return index
    codes.append(code)
    return len(codes) - 1


def _name(entry) -> str:
    name = entry.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _names(model, field: str, tensors, renumber=None) -> dict:
    """``{signature name: tensor index}`` for ``tensors`` (a graph's inputs or outputs), named as the
    model's first signature names them, else by position; indices renumbered by ``renumber``."""
    renumber = renumber or {}
    named = {}
    for signature in (model.signatureDefs or [])[:1]:
        for entry in getattr(signature, field) or []:
            name = entry.name.decode("utf-8", "replace") if isinstance(entry.name, bytes) else str(entry.name)
            named[int(entry.tensorIndex)] = name
    return {named.get(int(t), f"{field[:-1]}_{i}"): renumber.get(int(t), int(t)) for i, t in enumerate(tensors)}


def _signature(inputs: dict, outputs: dict):
    signature = tfl.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs, signature.outputs = [], []
    for names, target in ((inputs, signature.inputs), (outputs, signature.outputs)):
        for name, index in names.items():
            entry = tfl.TensorMapT()
            entry.name, entry.tensorIndex = name, index
            target.append(entry)
    return signature


def _keep_newest_runtime_version(joined, a, b) -> None:
    """``min_runtime_version`` of the joined model: the newer of the two networks' (a head may need newer ops)."""
    def version(model):
        for entry in model.metadata or []:
            if _name(entry) == "min_runtime_version":
                data = model.buffers[entry.buffer].data
                data = (bytes(data) if data is not None else b"").rstrip(b"\0")
                try:
                    return tuple(int(part) for part in data.decode().split(".")), len(data)
                except ValueError:
                    return None
        return None

    mine, theirs = version(a), version(b)
    if mine and theirs and theirs[0] > mine[0]:
        entry = next(e for e in joined.metadata if _name(e) == "min_runtime_version")
        buffer = copy.copy(joined.buffers[entry.buffer])
        text = ".".join(map(str, theirs[0])).encode()
        buffer.data = list(text.ljust(max(len(text), mine[1]), b"\0"))
        joined.buffers[entry.buffer] = buffer


def _pack(model) -> bytes:
    from cbr_lite.metadata import pack_model

    return pack_model(model)
