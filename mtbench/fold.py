"""Batch-norm folding: a faster, numerically equivalent copy of a frozen model for attacks.

An attack runs many forward + input-backward passes through a model in eval mode, where each
BatchNorm is a fixed per-channel affine map. Folding it into the convolution before it computes
the same function (to float rounding, about 1e-7 relative) with one memory-bound pass less per
layer: about 15% faster input gradients for a ResNet18 on CPU (benchmarks/bench_pgd.py).

Only the pattern ``conv -> BatchNorm`` where the conv's output feeds nothing else is folded, found
on the torch.fx graph of each submodule; a submodule that torch.fx cannot trace is kept as it is.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn

_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


def _fold_into(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
    shift = (bn.bias if bn.affine else 0) - bn.running_mean * scale
    # Conv2d weights are (out, in/groups, k, k); ConvTranspose2d weights are (in, out/groups, k, k).
    if isinstance(conv, nn.ConvTranspose2d):
        if conv.groups != 1:
            raise ValueError("grouped transposed convolutions are not folded")
        weight = conv.weight * scale.view(1, -1, 1, 1)
    else:
        weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    conv.weight = nn.Parameter(weight.detach(), requires_grad=False)
    conv.bias = nn.Parameter(bias.detach(), requires_grad=False)


def _fold_traced(module: nn.Module) -> nn.Module:
    try:
        graph_module = fx.symbolic_trace(module)
    except Exception:  # control flow on values, unsupported ops: keep the module unfolded
        return module
    modules = dict(graph_module.named_modules())
    folded = 0
    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and len(source.users) == 1
                and isinstance(modules[source.target], _CONVS)):
            continue
        conv = modules[source.target]
        if isinstance(conv, nn.ConvTranspose2d) and conv.groups != 1:
            continue
        _fold_into(conv, modules[node.target])
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        folded += 1
    if not folded:
        return module
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module


def _fold_children(parent: nn.Module) -> None:
    for name, child in list(parent.named_children()):
        if isinstance(child, (nn.ModuleDict, nn.ModuleList)):
            _fold_children(child)
        else:
            setattr(parent, name, _fold_traced(child))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A frozen eval-mode copy of ``model`` with BatchNorms folded into their convolutions.

    Traces each child (for a MultiTaskModel: the encoder and every decoder), so the parent's own
    ``forward`` (shape checks, dict outputs) is kept as written.
    """
    folded = copy.deepcopy(model).eval()
    _fold_children(folded)
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded
