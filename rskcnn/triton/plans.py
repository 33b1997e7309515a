"""Index lists for the tiled kernels, built on the device from the mask with tensor ops only.

No host synchronisation: every list has a capacity fixed by the shapes (all steps of a
tile) and a count per tile; kernels read the count and loop over that many entries.

Conventions. ``kept`` is the expanded bool mask ``(Cout, Cin_g, KH, KW)``; ``T = KH*KW``.
Output channels are visited in ``order`` (per conv group), which puts channels whose
kept taps agree next to each other and fully dropped filters last, so that whole tiles of
a ``filter`` or ``tap`` mask are empty and cost nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Beyond this many taps the sort key would overflow int64; the later taps are ignored by
# the key (the order stays valid, it just groups less well).
_KEY_TAPS = 62


def channel_order(kept: torch.Tensor, groups: int) -> torch.Tensor:
    """int32 ``(Cout,)``: global output-channel indices, sorted within each conv group by
    their kept-tap pattern (most kept taps first, stable), so that channels keeping the same
    taps are adjacent and dropped filters come last."""
    cout = kept.shape[0]
    taps = kept.flatten(2).any(1)[:, :_KEY_TAPS]  # (Cout, T'): tap t kept anywhere in filter o
    weights = torch.pow(2, torch.arange(taps.shape[1] - 1, -1, -1, device=kept.device, dtype=torch.int64))
    key = (taps.to(torch.int64) * weights).sum(1).view(groups, cout // groups)
    local = torch.sort(key, dim=1, descending=True, stable=True).indices
    offsets = torch.arange(groups, device=kept.device).unsqueeze(1) * (cout // groups)
    return (local + offsets).flatten().to(torch.int32)


def grouped_kept(kept: torch.Tensor, order: torch.Tensor, groups: int) -> torch.Tensor:
    """bool ``(G, Cout_g, Cin_g, T)``: the expanded mask with output channels in ``order``."""
    cout, cin_g = kept.shape[:2]
    return kept[order.long()].view(groups, cout // groups, cin_g, -1)


def tiles_kept(kept_g: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """bool ``(G, ceil(R/rows), ceil(C/cols), T)`` from ``kept_g`` ``(G, R, C, T)``: whether a
    ``rows x cols`` tile of one tap holds any kept weight."""
    g, r, c, t = kept_g.shape
    padded = F.pad(kept_g.to(torch.uint8), (0, 0, 0, (-c) % cols, 0, (-r) % rows))
    tiles = padded.view(g, padded.shape[1] // rows, rows, padded.shape[2] // cols, cols, t)
    return tiles.amax(dim=(2, 4)).bool()


def step_lists(kept_steps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From bool ``(tiles, S)`` (whether reduction step s of a tile is kept) to int32
    ``steps (tiles, S)``, whose first ``counts[tile]`` entries are the kept steps in order."""
    counts = kept_steps.sum(1, dtype=torch.int32)
    steps = torch.argsort(kept_steps.logical_not().to(torch.uint8), dim=1, stable=True)
    return steps.to(torch.int32).contiguous(), counts


def forward_steps(kept_g: torch.Tensor, block_n: int, block_k: int):
    """Per (group, tile of ``block_n`` ordered output channels): the kept steps
    ``s = tap * n_chunks + chunk`` over ``block_k``-channel input chunks."""
    tiles = tiles_kept(kept_g, block_n, block_k)  # (G, nN, nK, T)
    g, n_tiles, n_chunks, t = tiles.shape
    return step_lists(tiles.permute(0, 1, 3, 2).reshape(g * n_tiles, t * n_chunks))


def grad_input_steps(kept_g: torch.Tensor, block_n: int, block_k: int):
    """Per (group, tile of ``block_n`` input channels): the kept steps
    ``s = tap * n_chunks + chunk`` over ``block_k``-channel chunks of ordered output channels."""
    tiles = tiles_kept(kept_g, block_k, block_n)  # (G, nK, nN, T)
    g, n_chunks, n_tiles, t = tiles.shape
    return step_lists(tiles.permute(0, 2, 3, 1).reshape(g * n_tiles, t * n_chunks))


def grad_weight_tiles(kept_g: torch.Tensor, block_m: int, block_n: int) -> torch.Tensor:
    """uint8 ``(G, nO, nC, T)``, contiguous: whether the grad-weight tile of ``block_m`` ordered
    output channels x ``block_n`` input channels at a tap holds any kept weight."""
    return tiles_kept(kept_g, block_m, block_n).to(torch.uint8).contiguous()
