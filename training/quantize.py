"""int8 for ONNX Runtime: activation smoothing, then dynamic per-channel quantisation.

Dynamic quantisation scales each activation tensor with one number, so a few channels with
large values (usual in BERT-style encoders) cost the others their precision. Smoothing
(SmoothQuant, Xiao et al. 2023) divides each input channel of a weight product by
`s_j = max|x_j|^a / max|w_j|^(1-a)` and multiplies the weight rows by the same `s_j`: the
float model computes the same function (an extra elementwise Mul per input), but the
activations it quantises have a flatter range. The maxima come from calibration texts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

SMOOTH_ALPHA = 0.75

# The default weight type here; `finsentry export` chooses per artifact between 7-bit int8
# and uint8 weights by its parity gate (training/export.py, WEIGHT_RECIPES).
WEIGHT_TYPE = "uint8"


def weight_products(model: object) -> dict[str, list[object]]:
    """Activation tensor -> the MatMul nodes that multiply it by a constant weight matrix."""
    graph = model.graph  # type: ignore[attr-defined]
    constants = {init.name for init in graph.initializer}
    users: dict[str, list[object]] = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in constants:
            users.setdefault(node.input[0], []).append(node)
    return users


def activation_maxima(
    model_path: Path, names: Sequence[str], feeds: Iterable[Mapping[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel max |value| of the named intermediate tensors over the calibration feeds."""
    import onnx
    import onnxruntime as ort

    probe = onnx.load(str(model_path))
    for name in names:
        probe.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        )
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(list(names), dict(feed)), strict=True):
            channel_max = np.abs(value).reshape(-1, value.shape[-1]).max(axis=0)
            maxima[name] = np.maximum(maxima[name], channel_max) if name in maxima else channel_max
    return maxima


def smooth(
    src: Path,
    dst: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    alpha: float = SMOOTH_ALPHA,
    skip: Sequence[str] = (),
) -> None:
    """Write `src` with smoothed weight products to `dst` (same function in float).

    Products whose node name is in `skip` (they stay float) are left alone."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    users = {
        tensor: nodes
        for tensor, nodes in weight_products(model).items()
        if not any(n.name in skip for n in nodes)  # type: ignore[attr-defined]
    }
    maxima = activation_maxima(src, list(users), feeds)
    inserted: dict[str, object] = {}
    for tensor, nodes in users.items():
        weights = [numpy_helper.to_array(initializers[n.input[1]]) for n in nodes]  # type: ignore[attr-defined]
        w_max = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
        scale = maxima[tensor] ** alpha / np.maximum(w_max, 1e-8) ** (1 - alpha)
        scale = np.clip(scale, 1e-4, 1e4).astype(np.float32)
        inverse = numpy_helper.from_array((1.0 / scale).astype(np.float32), f"{tensor}/smooth_inv")
        graph.initializer.append(inverse)
        smoothed = f"{tensor}/smoothed"
        inserted[smoothed] = onnx.helper.make_node(
            "Mul", [tensor, inverse.name], [smoothed], name=f"{tensor}/smooth"
        )
        for node, weight in zip(nodes, weights, strict=True):
            name = node.input[1]  # type: ignore[attr-defined]
            initializers[name].CopyFrom(
                numpy_helper.from_array((weight * scale[:, None]).astype(np.float32), name)
            )
            node.input[0] = smoothed  # type: ignore[attr-defined]
    ordered: list[object] = []
    for node in list(graph.node):
        for name in node.input:
            if name in inserted:
                ordered.append(inserted.pop(name))
        ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)  # type: ignore[arg-type]
    onnx.save(model, str(dst))


def quantize_int8(
    fp32: Path,
    int8: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    keep_float: Sequence[str] = (),
    alpha: float | None = SMOOTH_ALPHA,
    weight_type: str = WEIGHT_TYPE,
    reduce_range: bool = False,
    op_types: Sequence[str] = ("MatMul",),
) -> None:
    """Smooth (unless `alpha` is None), then `quantize_dynamic` with per-channel 8-bit
    weights (`weight_type` "uint8" or "int8"; `reduce_range`: 7 bits) for every weight
    product except `keep_float`. `op_types` may add "Attention" (fused graphs: QKV int8)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_name(f"prepared-{fp32.name}")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    if alpha is not None and feeds:
        smooth(prepared, prepared, feeds, alpha=alpha, skip=keep_float)
    try:
        quantize_dynamic(
            str(prepared),
            str(int8),
            per_channel=True,
            weight_type=QuantType.QInt8 if weight_type == "int8" else QuantType.QUInt8,
            reduce_range=reduce_range,
            op_types_to_quantize=list(op_types),
            nodes_to_exclude=list(keep_float),
            # DefaultTensorType: fused contrib ops (Attention, SkipLayerNormalization) carry
            # no type information for the quantiser's shape inference; they are float.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": 1},
        )
    finally:
        prepared.unlink(missing_ok=True)
