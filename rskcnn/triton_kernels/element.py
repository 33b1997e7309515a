"""Sparse CUDA-core Triton kernels for ``element`` masks (one mask entry per weight).

Sputnik-style (Gale et al., SC20): every row of the sparse operand keeps a compacted list of
its kept entries, and a program walks one row's list over a tile of pixels, gathering the
operand each entry needs and multiplying with plain FMAs (no ``tl.dot``: an element mask has
no dense sub-blocks to feed a tensor core).

Index lists are built on the device from the bool mask with torch ops only, at a fixed
capacity (every entry of a row) plus a per-row count, so nothing synchronises with the host
and a launch can be captured in a CUDA graph. ``_compact`` orders each row as its kept
entries (ascending) followed by its dropped ones; kernels read the count from memory and
loop up to it.

* forward: row = output channel ``o``, entries ``k = (kh*KW + kw)*Cin_g + c``; a program owns
  ``BLOCK_M`` flattened output pixels ``(n, oh, ow)`` of one row and consumes its list
  ``BLOCK_K`` entries at a time as a ``[BLOCK_K, BLOCK_M]`` gather. Along the pixels the
  gather is contiguous for NCHW (stride 1); the lists are tap-major so that consecutive
  entries are mostly consecutive channels of one tap, which share cache sectors in
  channels_last.
* grad-input: row = (input channel, stride phase), entries ``(kh*KW + kw)*Cout_g + o_local``:
  the transposed mask. With stride ``(sh, sw)`` the input pixels split into ``sh*sw`` phases
  ``(ih % sh, iw % sw)``; a tap reaches a phase only where ``ih + ph - kh*dh`` is divisible
  by ``sh`` (and likewise along the width), which depends on the phase alone, so each phase's
  list holds only the taps that reach it and no iteration is spent on taps that miss.
* grad-weight: an SDDMM over the forward's lists. A program takes ``BLOCK_E`` consecutive
  positions of one output channel's list, loads that channel's grad_output once per pixel
  chunk and reuses it for all ``BLOCK_E`` entries. Positions past the count are that row's
  dropped weights, so the same program writes their exact zeros and the output is fully
  written without a separate fill. When ``Cout * ceil(K / BLOCK_E)`` programs are too few to
  fill a GPU, the pixel range is split and the partial sums are added by torch (no atomics,
  so the result is deterministic).

Load balance (Sputnik's row swizzle): rows are launched in order of decreasing kept count,
``argsort(count, descending=True)`` on the device. The 1-D grid runs the pixel tiles of a row
consecutively, so the programs of the longest rows are issued first and the short (or empty:
fully dropped filters) rows fill the tail, a longest-processing-time-first schedule.

Offsets: the batch term ``n * stride_n`` is computed in int64, so a tensor may exceed 2**31
elements; one image (``C*H*W``), the weight, and ``N*OH*OW`` (and ``N*H*W``) must stay below
2**31. Grids depend on shapes only; an empty grid is not launched.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

__all__ = ["element_forward", "element_grad_input", "element_grad_weight"]

# Fixed default configurations (no autotuning here).
FWD_BLOCK_M, FWD_BLOCK_K, FWD_WARPS = 128, 8, 4
BWI_BLOCK_M, BWI_BLOCK_K, BWI_WARPS = 128, 8, 4
BWW_BLOCK_E, BWW_BLOCK_P, BWW_WARPS = 16, 128, 4
# Split grad-weight's pixel reduction until about this many programs run (a few waves on a
# large GPU), but never into chunks of fewer than BWW_MIN_PIXELS pixels.
BWW_TARGET_PROGRAMS = 1024
BWW_MIN_PIXELS = 4 * BWW_BLOCK_P

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# --------------------------------------------------------------------------- kernels


@triton.jit
def _element_fwd_kernel(
    x_ptr, idx_ptr, wv_ptr, cnt_ptr, rows_ptr, bias_ptr, out_ptr,
    NPIX, OH, OW, H, W, COUT_G, CIN_G, K,
    sxn, sxc, sxh, sxw,
    son, soc, soh, sow,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    NUM_TILES,
    KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    tile = pid % NUM_TILES
    o = tl.load(rows_ptr + pid // NUM_TILES)  # swizzled: longest rows first
    cnt = tl.load(cnt_ptr + o)
    g = o // COUT_G

    p = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    pmask = p < NPIX
    ow = p % OW
    oh = (p // OW) % OH
    n = (p // OW) // OH
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    x_base = n.to(tl.int64) * sxn + (g * CIN_G).to(tl.int64) * sxc + ih0 * sxh + iw0 * sxw

    acc = tl.zeros((BLOCK_K, BLOCK_M), dtype=tl.float32)
    row_off = o.to(tl.int64) * K
    for start in range(0, cnt, BLOCK_K):
        e = start + tl.arange(0, BLOCK_K)
        emask = e < cnt
        k = tl.load(idx_ptr + row_off + e, mask=emask, other=0)
        w = tl.load(wv_ptr + row_off + e, mask=emask, other=0.0)
        c = k % CIN_G
        kw = (k // CIN_G) % KW
        kh = k // (CIN_G * KW)
        dh = kh * DIL_H
        dw = kw * DIL_W
        ih = ih0[None, :] + dh[:, None]
        iw = iw0[None, :] + dw[:, None]
        m = emask[:, None] & pmask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        delta = c * sxc + dh * sxh + dw * sxw
        xv = tl.load(x_ptr + x_base[None, :] + delta[:, None], mask=m, other=0.0)
        acc += xv.to(tl.float32) * w[:, None]
    res = tl.sum(acc, axis=0)
    if HAS_BIAS:
        res += tl.load(bias_ptr + o).to(tl.float32)
    out_off = n.to(tl.int64) * son + o.to(tl.int64) * soc + oh * soh + ow * sow
    tl.store(out_ptr + out_off, res.to(out_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def _element_bwi_kernel(
    go_ptr, idx_ptr, wv_ptr, cnt_ptr, rows_ptr, out_ptr,
    NPIX_Q, HQ, WQ, H, W, OH, OW, COUT_G, CIN_G, L,
    sgn, sgc, sgh, sgw,
    son, soc, soh, sow,
    PAD_H, PAD_W, DIL_H, DIL_W,
    NUM_TILES,
    STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    KH: tl.constexpr, KW: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    tile = pid % NUM_TILES
    row = tl.load(rows_ptr + pid // NUM_TILES)  # row = ci * phases + phase
    cnt = tl.load(cnt_ptr + row)
    ci = row // (STRIDE_H * STRIDE_W)
    phase = row % (STRIDE_H * STRIDE_W)
    rh = phase // STRIDE_W
    rw = phase % STRIDE_W
    g = ci // CIN_G

    # pixels of this phase: ih = rh + sh*ihq, iw = rw + sw*iwq
    p = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    iwq = p % WQ
    ihq = (p // WQ) % HQ
    n = (p // WQ) // HQ
    ih = rh + STRIDE_H * ihq
    iw = rw + STRIDE_W * iwq
    pmask = (p < NPIX_Q) & (ih < H) & (iw < W)
    go_base = n.to(tl.int64) * sgn + (g * COUT_G).to(tl.int64) * sgc + ihq * sgh + iwq * sgw

    acc = tl.zeros((BLOCK_K, BLOCK_M), dtype=tl.float32)
    row_off = row.to(tl.int64) * L
    for start in range(0, cnt, BLOCK_K):
        e = start + tl.arange(0, BLOCK_K)
        emask = e < cnt
        j = tl.load(idx_ptr + row_off + e, mask=emask, other=0)
        w = tl.load(wv_ptr + row_off + e, mask=emask, other=0.0)
        ol = j % COUT_G
        kw = (j // COUT_G) % KW
        kh = j // (COUT_G * KW)
        # exact divisions: the list holds only taps whose numerator the stride divides
        sh_ = (rh + PAD_H - kh * DIL_H) // STRIDE_H
        sw_ = (rw + PAD_W - kw * DIL_W) // STRIDE_W
        oh = ihq[None, :] + sh_[:, None]
        ow = iwq[None, :] + sw_[:, None]
        m = emask[:, None] & pmask[None, :] & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
        delta = ol * sgc + sh_ * sgh + sw_ * sgw
        gv = tl.load(go_ptr + go_base[None, :] + delta[:, None], mask=m, other=0.0)
        acc += gv.to(tl.float32) * w[:, None]
    res = tl.sum(acc, axis=0)
    out_off = n.to(tl.int64) * son + ci.to(tl.int64) * soc + ih * soh + iw * sow
    tl.store(out_ptr + out_off, res.to(out_ptr.dtype.element_ty), mask=pmask)


@triton.jit
def _element_bww_kernel(
    go_ptr, x_ptr, idx_ptr, cnt_ptr, rows_ptr, out_ptr, scale,
    NPIX, PIX_PER_SPLIT, OH, OW, H, W, COUT, COUT_G, CIN_G, K,
    sgn, sgc, sgh, sgw,
    sxn, sxc, sxh, sxw,
    soo, soc, soh, sow,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    NUM_CHUNKS,
    KH: tl.constexpr, KW: tl.constexpr, DIRECT: tl.constexpr,
    BLOCK_E: tl.constexpr, BLOCK_P: tl.constexpr,
):
    pid = tl.program_id(0)
    split = tl.program_id(1)
    chunk = pid % NUM_CHUNKS
    o = tl.load(rows_ptr + pid // NUM_CHUNKS)
    cnt = tl.load(cnt_ptr + o)
    g = o // COUT_G

    e = chunk * BLOCK_E + tl.arange(0, BLOCK_E)
    evalid = e < K
    ekept = e < cnt
    k = tl.load(idx_ptr + o.to(tl.int64) * K + e, mask=evalid, other=0)
    c = k % CIN_G
    kw = (k // CIN_G) % KW
    kh = k // (CIN_G * KW)
    dh = kh * DIL_H
    dw = kw * DIL_W
    x_delta = (g * CIN_G + c).to(tl.int64) * sxc + dh * sxh + dw * sxw

    p_lo = split * PIX_PER_SPLIT
    p_hi = tl.minimum(p_lo + PIX_PER_SPLIT, NPIX)
    # a chunk holding only dropped positions skips the reduction and writes zeros
    p_hi = tl.where(chunk * BLOCK_E < cnt, p_hi, p_lo)
    acc = tl.zeros((BLOCK_E, BLOCK_P), dtype=tl.float32)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        pmask = p < p_hi
        ow = p % OW
        oh = (p // OW) % OH
        n = ((p // OW) // OH).to(tl.int64)
        gv = tl.load(go_ptr + n * sgn + o.to(tl.int64) * sgc + oh * sgh + ow * sgw, mask=pmask, other=0.0)
        ih0 = oh * STRIDE_H - PAD_H
        iw0 = ow * STRIDE_W - PAD_W
        ih = ih0[None, :] + dh[:, None]
        iw = iw0[None, :] + dw[:, None]
        m = ekept[:, None] & pmask[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        x_base = n * sxn + ih0 * sxh + iw0 * sxw
        xv = tl.load(x_ptr + x_base[None, :] + x_delta[:, None], mask=m, other=0.0)
        acc += xv.to(tl.float32) * gv.to(tl.float32)[None, :]
    res = tl.sum(acc, axis=1)
    if DIRECT:
        out_off = o.to(tl.int64) * soo + c * soc + kh * soh + kw * sow
        tl.store(out_ptr + out_off, (res * scale).to(out_ptr.dtype.element_ty), mask=evalid)
    else:
        # fp32 workspace (splits, COUT, K), K tap-major; torch adds the splits and applies the scale
        ws_off = (split.to(tl.int64) * COUT + o) * K + k
        tl.store(out_ptr + ws_off, res, mask=evalid)


# --------------------------------------------------------------------------- device-side lists


def _compact(kept_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row lists of kept positions, on the device, without host synchronisation.

    ``kept_rows``: bool (R, L). Returns ``order`` int64 (R, L), a permutation of ``0..L-1`` per
    row with the kept positions first (ascending) and the dropped ones after (ascending);
    ``count`` int32 (R,), kept per row; and ``rows`` int32 (R,), the rows by decreasing count
    (stable), the launch order.
    """
    kept_i = kept_rows.to(torch.int32)
    count = kept_i.sum(dim=1, dtype=torch.int32)
    kept_rank = torch.cumsum(kept_i, dim=1) - 1
    dropped_rank = torch.cumsum(1 - kept_i, dim=1) - 1 + count[:, None]
    slot = torch.where(kept_rows, kept_rank, dropped_rank).to(torch.int64)
    positions = torch.arange(kept_rows.shape[1], device=kept_rows.device).expand_as(slot)
    # Contiguous whatever the strides of kept_rows: the kernels index the lists as (R, L) row-major.
    order = torch.empty(slot.shape, dtype=slot.dtype, device=slot.device).scatter_(1, slot, positions)
    rows = torch.argsort(count, descending=True, stable=True).to(torch.int32)
    return order, count, rows


def _tap_major(t: torch.Tensor) -> torch.Tensor:
    """(Cout, Cin_g, KH, KW) -> (Cout, KH*KW*Cin_g): entry ``k = (kh*KW + kw)*Cin_g + c``."""
    return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)


def _forward_lists(weight: torch.Tensor, kept: torch.Tensor):
    """Per output channel: kept ``k`` int32 (Cout, K), their weights fp32 (Cout, K), counts, launch order."""
    order, count, rows = _compact(_tap_major(kept))
    values = _tap_major(weight).gather(1, order).to(torch.float32).contiguous()
    return order.to(torch.int32), values, count, rows


def _transpose_lists(weight, kept, stride, padding, dilation, groups):
    """Per (input channel, stride phase): kept ``(kh*KW + kw)*Cout_g + o_local`` entries that reach that phase.

    Returns idx int32 (Cin*S, L), values fp32 (Cin*S, L), counts, launch order; S = sh*sw,
    L = Cout_g*KH*KW.
    """
    cout, cin_g, kh_, kw_ = weight.shape
    cout_g = cout // groups
    sh, sw = stride
    dev = kept.device

    def transposed(t):  # (Cout, Cin_g, KH, KW) -> (Cin, KH, KW, Cout_g)
        t = t.reshape(groups, cout_g, cin_g, kh_, kw_).permute(0, 2, 3, 4, 1)
        return t.reshape(groups * cin_g, kh_, kw_, cout_g)

    rh = torch.arange(sh, device=dev)[:, None]
    rw = torch.arange(sw, device=dev)[:, None]
    ok_h = torch.remainder(rh + padding[0] - torch.arange(kh_, device=dev)[None, :] * dilation[0], sh) == 0
    ok_w = torch.remainder(rw + padding[1] - torch.arange(kw_, device=dev)[None, :] * dilation[1], sw) == 0
    reach = (ok_h[:, None, :, None] & ok_w[None, :, None, :]).reshape(sh * sw, kh_, kw_, 1)
    kept_t = transposed(kept)[:, None] & reach[None]  # (Cin, S, KH, KW, Cout_g)
    cin = kept_t.shape[0]
    order, count, rows = _compact(kept_t.reshape(cin * sh * sw, -1))
    w_t = transposed(weight).reshape(cin, 1, -1).expand(cin, sh * sw, -1).reshape(cin * sh * sw, -1)
    values = w_t.gather(1, order).to(torch.float32).contiguous()
    return order.to(torch.int32), values, count, rows


# --------------------------------------------------------------------------- checks


def _check(name, t, dim, device, dtype=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != dim:
        raise ValueError(f"{name} must be {dim}-D, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name} must be on {device}, got {t.device}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {t.dtype}")
    if dtype is None and t.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")


def _check_common(weight, kept, groups, device):
    _check("weight", weight, 4, device)
    _check("kept", kept, 4, device, torch.bool)
    if kept.shape != weight.shape:
        raise ValueError(f"kept must have the weight's shape {tuple(weight.shape)}, got {tuple(kept.shape)}")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups must be >= 1 and divide Cout={weight.shape[0]}, got {groups}")


def _check_shape(name, t, expected):
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {tuple(t.shape)}")


def _out_extent(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


# --------------------------------------------------------------------------- launches


def element_forward(input, weight, kept, bias, out, stride, padding, dilation, groups) -> None:
    """``out`` (N, Cout, OH, OW) <- conv2d(input, weight, bias), visiting only ``kept`` weights.

    input (N, Cin, H, W); weight (Cout, Cin/groups, KH, KW), already masked and scaled;
    kept bool, the weight's shape; bias (Cout,) or None. Any strides; fp32 accumulation.
    """
    _check("input", input, 4, input.device)
    _check_common(weight, kept, groups, input.device)
    _check("out", out, 4, input.device)
    n, cin, h, w = input.shape
    cout, cin_g, kh, kw = weight.shape
    if cin != cin_g * groups:
        raise ValueError(f"input must have Cin = weight.shape[1] * groups = {cin_g * groups} channels, got {cin}")
    oh, ow = (_out_extent(s, k, st, p, d) for s, k, st, p, d in
              zip((h, w), (kh, kw), stride, padding, dilation))
    _check_shape("out", out, (n, cout, oh, ow))
    if bias is not None:
        _check("bias", bias, 1, input.device)
        _check_shape("bias", bias, (cout,))
    npix = n * oh * ow
    if npix == 0 or cout == 0:
        return
    idx, values, count, rows = _forward_lists(weight, kept)
    tiles = triton.cdiv(npix, FWD_BLOCK_M)
    torch.library.wrap_triton(_element_fwd_kernel)[(tiles * cout,)](
        input, idx, values, count, rows, bias.contiguous() if bias is not None else values, out,
        npix, oh, ow, h, w, cout // groups, cin_g, cin_g * kh * kw,
        *input.stride(), *out.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        tiles,
        KH=kh, KW=kw, HAS_BIAS=bias is not None,
        BLOCK_M=FWD_BLOCK_M, BLOCK_K=FWD_BLOCK_K, num_warps=FWD_WARPS,
    )


def element_grad_input(grad_output, weight, kept, out, stride, padding, dilation, groups) -> None:
    """``out`` (N, Cin, H, W) <- the forward's input gradient for ``grad_output`` (N, Cout, OH, OW).

    Every element of ``out`` is written. weight/kept as in :func:`element_forward`.
    """
    _check("grad_output", grad_output, 4, grad_output.device)
    _check_common(weight, kept, groups, grad_output.device)
    _check("out", out, 4, grad_output.device)
    n, cin, h, w = out.shape
    cout, cin_g, kh, kw = weight.shape
    if cin != cin_g * groups:
        raise ValueError(f"out must have Cin = weight.shape[1] * groups = {cin_g * groups} channels, got {cin}")
    oh, ow = (_out_extent(s, k, st, p, d) for s, k, st, p, d in
              zip((h, w), (kh, kw), stride, padding, dilation))
    _check_shape("grad_output", grad_output, (n, cout, oh, ow))
    if out.numel() == 0:
        return
    sh, sw = stride
    hq, wq = triton.cdiv(h, sh), triton.cdiv(w, sw)
    npix_q = n * hq * wq
    if oh <= 0 or ow <= 0 or cout == 0:
        out.zero_()
        return
    idx, values, count, rows = _transpose_lists(weight, kept, stride, padding, dilation, groups)
    tiles = triton.cdiv(npix_q, BWI_BLOCK_M)
    torch.library.wrap_triton(_element_bwi_kernel)[(tiles * cin * sh * sw,)](
        grad_output, idx, values, count, rows, out,
        npix_q, hq, wq, h, w, oh, ow, cout // groups, cin_g, (cout // groups) * kh * kw,
        *grad_output.stride(), *out.stride(),
        padding[0], padding[1], dilation[0], dilation[1],
        tiles,
        STRIDE_H=sh, STRIDE_W=sw, KH=kh, KW=kw,
        BLOCK_M=BWI_BLOCK_M, BLOCK_K=BWI_BLOCK_K, num_warps=BWI_WARPS,
    )


def _grad_weight_splits(programs: int, npix: int) -> int:
    """How many pixel ranges grad-weight's reduction is split into (shape-only)."""
    want = triton.cdiv(BWW_TARGET_PROGRAMS, max(programs, 1))
    return max(1, min(want, npix // BWW_MIN_PIXELS))


def element_grad_weight(grad_output, input, kept, scale, out, stride, padding, dilation, groups,
                        *, splits: int | None = None) -> None:
    """``out`` (Cout, Cin/groups, KH, KW) <- scale * weight gradient at kept entries, exactly 0 elsewhere.

    grad_output (N, Cout, OH, OW); input (N, Cin, H, W); kept bool, out's shape; ``scale`` a
    Python number. ``splits`` overrides how many pixel ranges the reduction is split into
    (default: chosen from the shapes).
    """
    _check("grad_output", grad_output, 4, grad_output.device)
    _check("input", input, 4, grad_output.device)
    _check_common(out, kept, groups, grad_output.device)
    n, cin, h, w = input.shape
    cout, cin_g, kh, kw = out.shape
    if cin != cin_g * groups:
        raise ValueError(f"input must have Cin = out.shape[1] * groups = {cin_g * groups} channels, got {cin}")
    oh, ow = (_out_extent(s, k, st, p, d) for s, k, st, p, d in
              zip((h, w), (kh, kw), stride, padding, dilation))
    _check_shape("grad_output", grad_output, (n, cout, oh, ow))
    if out.numel() == 0:
        return
    npix = n * oh * ow
    if npix <= 0:
        out.zero_()
        return
    k_len = cin_g * kh * kw
    order, count, rows = _compact(_tap_major(kept))
    idx = order.to(torch.int32)
    chunks = triton.cdiv(k_len, BWW_BLOCK_E)
    if splits is None:
        splits = _grad_weight_splits(chunks * cout, npix)
    splits = max(1, min(int(splits), npix))
    per_split = triton.cdiv(npix, splits)
    splits = triton.cdiv(npix, per_split)
    direct = splits == 1
    target = out if direct else torch.empty((splits, cout, k_len), device=out.device, dtype=torch.float32)
    torch.library.wrap_triton(_element_bww_kernel)[(chunks * cout, splits)](
        grad_output, input, idx, count, rows, target, float(scale),
        npix, per_split, oh, ow, h, w, cout, cout // groups, cin_g, k_len,
        *grad_output.stride(), *input.stride(), *out.stride(),
        stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
        chunks,
        KH=kh, KW=kw, DIRECT=direct,
        BLOCK_E=BWW_BLOCK_E, BLOCK_P=BWW_BLOCK_P, num_warps=BWW_WARPS,
    )
    if not direct:
        out.copy_((target.sum(dim=0) * float(scale)).view(cout, kh, kw, cin_g).permute(0, 3, 1, 2))
