"""What int8 quantisation may touch in a graph, and how onnxruntime's pre-processing can shape it.

clf/export/int8.py quantises the proven fp32 graph: it keeps the float tail (every node after the last weighted op,
such as an ensemble's or TTA's average, the temperature, the log-softmax) out of the quantiser and skips onnxruntime's
symbolic shape inference for graphs it cannot shape.
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

from clf.export import graph

logger = logging.getLogger(__name__)

# Ops whose output onnxruntime's symbolic shape inference (the quantiser's first pre-processing pass) cannot shape:
# from opset 18 the reductions take their axes as an input, it has handlers only for ReduceSum/ReduceMean/ReduceProd,
# and its fallback (ONNX inference of the node alone) gets no axes value, so the output loses its rank and the next
# elementwise node fails ("object of type 'NoneType' has no len()"). Ensembles, TTA and --calibrate graphs average
# with ReduceLogSumExp and divide it by the temperature. ONNX's own shape inference (the pass after it) shapes these
# graphs fully, so for them the symbolic pass is skipped; every other graph is pre-processed as before.
SYMBOLIC_SHAPE_UNSUPPORTED = frozenset({"ReduceLogSumExp", "ReduceLogSum", "ReduceMax", "ReduceMin", "ReduceL1",
                                        "ReduceL2", "ReduceSumSquare"})
# The ops int8 speeds up. Whatever follows the last of them on every path to the output (an ensemble's or TTA's
# average, the temperature, the log-softmax: log-probabilities) stays float: quantising it gains nothing and breaks
# what it computes (uint8 log-probabilities of an int8 ensemble summed to 0.9992, not 1).
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


def float_tail(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes after the last weighted op (WEIGHTED_OPS) on every path to the outputs, in graph order.

    A bare network ends in its classifier's Gemm: no tail. A deployed graph (ensemble, TTA, temperature) has its
    combining head here.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    feeds_weighted: set[int] = set()  # ids of nodes with a weighted op at or after them
    for node in reversed(model.graph.node):  # the graph is topologically sorted: consumers come later
        if node.op_type in WEIGHTED_OPS or id(node) in feeds_weighted:
            feeds_weighted.update(id(producers[name]) for name in node.input if name in producers)
            feeds_weighted.add(id(node))
    return [node for node in model.graph.node if id(node) not in feeds_weighted and _after_weighted(node, producers)]


def _after_weighted(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> bool:
    """Whether a weighted op lies upstream of `node` (constants and input-only nodes are no tail of a network)."""
    pending, seen = [node], set()
    while pending:
        current = pending.pop()
        for name in current.input:
            parent = producers.get(name)
            if parent is None or id(parent) in seen:
                continue
            if parent.op_type in WEIGHTED_OPS:
                return True
            seen.add(id(parent))
            pending.append(parent)
    return False


def name_float_tail(path: Path) -> list[str]:
    """The names of the float tail of the model at `path` (unnamed tail nodes get a name, saved back)."""
    model = onnx.load(str(path))
    tail = float_tail(model)
    if any(not node.name for node in tail):
        for index, node in enumerate(tail):
            node.name = node.name or f"clf_float_tail_{index}"
        onnx.save(model, str(path))
    if tail:
        logger.debug("int8: %d node(s) after the last weighted op stay float (%s)", len(tail),
                     ", ".join(sorted({node.op_type for node in tail})))
    return [node.name for node in tail]


def symbolic_shapes_supported(path: Path) -> bool:
    """Whether onnxruntime's symbolic shape inference can shape every node of the model at `path` (opset 18 and later
    reductions other than ReduceSum/ReduceMean/ReduceProd it cannot; see SYMBOLIC_SHAPE_UNSUPPORTED)."""
    model = onnx.load(str(path), load_external_data=False)
    unsupported = sorted({node.op_type for node in model.graph.node if node.op_type in SYMBOLIC_SHAPE_UNSUPPORTED}
                         if graph.model_opset(model) and graph.model_opset(model) >= 18 else set())
    if unsupported:
        logger.debug("int8 pre-processing without symbolic shape inference (it cannot shape %s at opset %s); "
                     "ONNX shape inference shapes the graph", ", ".join(unsupported), graph.model_opset(model))
    return not unsupported
