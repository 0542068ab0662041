"""int8 for the exported graph: weights per channel, spikes exact, real-valued layers untouched.

A spike is a small count on a fixed grid: 0/1 for the LIF, ``k/L`` for VLIF-Net's multi-level
NI-LIF (and ``k/(L·m)`` after an average of ``m`` of them). Such a tensor is exactly an unsigned
8-bit integer times ``1/L``, so a conv whose input is spikes can run as an int8 conv with no
error on its activation; only its weights are rounded (symmetric, one scale per output channel,
which keeps each filter's shape). Convs whose inputs are real-valued (the first layer on the
image, the last one back to it, the attention's small convs on pooled vectors, VLIF-Net's convs
on membrane values) stay in float, because their activations would be rounded.

Which conv inputs are spikes is decided twice. By construction (:func:`spike_tensors`): the
tensor comes out of a neuron's fire op (the LIF's threshold compare turned to 0/1, the NI-LIF's
rounding divided by its levels) through ops that only move values (reshape, concat, slice,
transpose, max pooling, ...). And by value: on a calibration image every value is ``k/L`` with
``0 <= k <= 255`` and ``L`` a power of two up to :data:`MAX_LEVELS` (:func:`spike_step`), which
gives the step. Values alone are not enough: a ReLU that is zero everywhere on one image sits
on every grid and is real-valued on the next. The tests check on other images that every
quantised activation round-trips exactly.

:func:`quantize_int8` returns the graph with ``QuantizeLinear``/``DequantizeLinear`` pairs (the
QDQ form both ONNX Runtime and OpenVINO read as int8 layers); :func:`int8_summary` says how many
convs and what share of their multiply-accumulates it turned to int8.
"""
from __future__ import annotations

import numpy as np

from .export import META_PREFIX

MAX_LEVELS = 64               # the finest spike step looked for: 1/64
WEIGHT_QMAX = 127             # symmetric int8 weights: [-127, 127]


def _proto(data: bytes):
    import onnx
    return onnx.load_from_string(data)


def _constants(proto) -> dict[str, np.ndarray]:
    from onnx import numpy_helper
    values = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == 'Constant' and node.attribute and node.attribute[0].name == 'value':
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def spike_step(values: np.ndarray) -> float | None:
    """``1/L`` when every value of ``values`` is ``k/L`` (``0 <= k <= 255``, ``L`` a power of
    two up to :data:`MAX_LEVELS`), for the smallest such ``L``; else ``None``."""
    values = np.unique(np.asarray(values, dtype=np.float64))
    if values.size == 0 or values[0] < 0:
        return None
    levels = 1
    while levels <= MAX_LEVELS:
        counts = values * levels
        if np.all(counts == np.round(counts)) and counts[-1] <= 255:
            return 1.0 / levels
        levels *= 2
    return None


# Ops that only move, copy or select values: spikes in, spikes out.
# (Cast: spikes are small integers, exact in every float and integer type.)
_VALUE_PRESERVING = {'Reshape', 'Squeeze', 'Unsqueeze', 'Concat', 'Split', 'Slice', 'Transpose',
                     'Cast', 'Gather', 'Identity', 'Flatten', 'Expand', 'Tile', 'MaxPool',
                     'ReduceMax'}


def spike_tensors(proto) -> set[str]:
    """Names of the tensors that hold spikes by construction: a fire op's output (``Cast`` or
    ``Where`` of a ``GreaterOrEqual``: the LIF; ``Div`` of a ``Round``: the NI-LIF), and what
    value-preserving ops make of spikes only (:data:`_VALUE_PRESERVING`, plus ``Resize`` in
    nearest mode). The graph's nodes are in topological order (ONNX requires it)."""
    producer = {o: n for n in proto.graph.node for o in n.output}
    spikes: set[str] = set()

    def op_of(name):
        node = producer.get(name)
        return node.op_type if node is not None else None

    for node in proto.graph.node:
        op, ins = node.op_type, [i for i in node.input if i]
        fired = (op in ('Cast', 'Where') and ins and op_of(ins[0]) == 'GreaterOrEqual') or \
            (op == 'Div' and ins and op_of(ins[0]) == 'Round')
        nearest = op == 'Resize' and any(a.name == 'mode' and a.s == b'nearest'
                                         for a in node.attribute)
        moved = (op in _VALUE_PRESERVING or nearest) and ins and ins[0] in spikes and (
            op != 'Concat' or all(i in spikes for i in ins))
        if fired or moved:
            spikes.update(node.output)
    return spikes


def conv_inputs(data: bytes, image: np.ndarray, threads: int = 1
                ) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Each conv's name -> (its input activation, its output, its multiply-accumulates) when the
    float graph runs on ``image`` ``[1,C,H,W]`` (ONNX Runtime, every conv's input and output
    made a graph output)."""
    import onnx
    import onnxruntime as ort
    proto = _proto(data)
    convs = [n for n in proto.graph.node if n.op_type == 'Conv']
    known = {o.name for o in proto.graph.output}
    wanted = list(dict.fromkeys(t for n in convs for t in (n.input[0], n.output[0])))
    for name in wanted:
        if name not in known:
            proto.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), options,
                                providers=['CPUExecutionProvider'])
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: image})))
    weights = _constants(proto)
    out = {}
    for i, node in enumerate(convs):
        w = weights.get(node.input[1])
        y = values[node.output[0]]
        macs = int(y.size * (w[0].size if w is not None else 0))
        out[node.name or f'conv{i}'] = (values[node.input[0]], y, macs)
    return out


def quantize_weights(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8: ``(q, scale)`` with ``w ≈ q * scale[c]``."""
    flat = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    scale = np.where(flat > 0, flat / WEIGHT_QMAX, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (w.ndim - 1)
    q = np.clip(np.round(w / scale.reshape(shape)), -WEIGHT_QMAX, WEIGHT_QMAX).astype(np.int8)
    return q, scale


def quantize_int8(data: bytes, image: np.ndarray, threads: int = 1) -> bytes:
    """The graph ``data`` with every conv whose input is spikes on ``image`` (see
    :func:`spike_step`) made int8: a ``QuantizeLinear``/``DequantizeLinear`` pair (uint8, zero
    point 0, scale the spike step) on the activation and per-channel int8 weights behind a
    ``DequantizeLinear``. Biases and every other conv stay float. Metadata is kept, with
    ``spikederain.precision = int8`` added."""
    from onnx import helper, numpy_helper
    proto = _proto(data)
    for i, node in enumerate(proto.graph.node):
        if node.op_type == 'Conv' and not node.name:
            node.name = f'conv{i}'
    renamed = proto.SerializeToString()
    by_name = {n.name: n for n in proto.graph.node if n.op_type == 'Conv'}
    spikes = spike_tensors(proto)
    steps, macs = {}, {}
    for name, (x, _, count) in conv_inputs(renamed, image, threads).items():
        macs[name] = count
        step = spike_step(x) if by_name[name].input[0] in spikes else None
        if step is not None:
            steps[name] = step
    consts = _constants(proto)
    nodes, done = [], set()
    for node in proto.graph.node:
        if node.op_type == 'Conv' and node.name in steps and node.input[1] in consts:
            x, w = node.input[0], node.input[1]
            step = steps[node.name]
            tag = f'{x}_q{int(round(1 / step))}'
            if tag not in done:
                done.add(tag)
                proto.graph.initializer.extend([
                    numpy_helper.from_array(np.array(step, np.float32), f'{tag}_scale'),
                    numpy_helper.from_array(np.array(0, np.uint8), f'{tag}_zero')])
                nodes.append(helper.make_node('QuantizeLinear', [x, f'{tag}_scale',
                                                                 f'{tag}_zero'], [f'{tag}_u8']))
                nodes.append(helper.make_node('DequantizeLinear', [f'{tag}_u8', f'{tag}_scale',
                                                                   f'{tag}_zero'], [tag]))
            q, scale = quantize_weights(consts[w])
            wq = f'{node.name}_w'
            proto.graph.initializer.extend([
                numpy_helper.from_array(q, f'{wq}_i8'),
                numpy_helper.from_array(scale, f'{wq}_scale'),
                numpy_helper.from_array(np.zeros(len(scale), np.int8), f'{wq}_zero')])
            nodes.append(helper.make_node('DequantizeLinear', [f'{wq}_i8', f'{wq}_scale',
                                                               f'{wq}_zero'], [wq], axis=0))
            node.input[0], node.input[1] = tag, wq
        nodes.append(node)
    used = {t for n in nodes for t in n.input}
    kept = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    proto.metadata_props.add(key=META_PREFIX + 'precision', value='int8')
    share = sum(macs[n] for n in steps) / max(1, sum(macs.values()))
    proto.metadata_props.add(key=META_PREFIX + 'int8_mac_share', value=f'{share:.4f}')
    return proto.SerializeToString()


def int8_summary(data: bytes) -> dict:
    """How much of a graph from :func:`quantize_int8` is int8: ``convs``, ``int8_convs`` and
    ``int8_mac_share`` (of the convs' multiply-accumulates, on the calibration image)."""
    proto = _proto(data)
    convs = [n for n in proto.graph.node if n.op_type == 'Conv']
    dq_out = {n.output[0] for n in proto.graph.node if n.op_type == 'DequantizeLinear'}
    int8 = sum(1 for n in convs if n.input[0] in dq_out and n.input[1] in dq_out)
    meta = {p.key: p.value for p in proto.metadata_props}
    share = float(meta.get(META_PREFIX + 'int8_mac_share', 'nan'))
    return {'convs': len(convs), 'int8_convs': int8, 'int8_mac_share': share}
