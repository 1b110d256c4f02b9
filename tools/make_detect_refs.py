#!/usr/bin/env python3
"""Writes the small references under tests/data/detect/ used by tests/test_interp.c,
test_anomaly_map.c (map and smoothing), test_nfa.c and test_metrics.c.

Run from the repository root:  python3 tools/make_detect_refs.py [section ...]
Sections: interp anomaly smooth nfa_tree block metrics (default: all).

Sources of truth (independent of the C code):
  * interpolation and anomaly map: torch.nn.functional.interpolate (torch 1.13);
  * map smoothing: scipy.ndimage.gaussian_filter1d (reflect, truncate 4);
  * tree NFA: a plain Python/numpy re-implementation (dict/list tree built by
    flooding each upper level set, no union-find), written from spec 7.1;
  * log10 N_T: mpmath with 50 digits;
  * block NFA: scipy.stats.binom.logsf and scipy.stats.chi2.ppf;
  * metrics: sklearn.metrics.roc_auc_score / roc_curve, scipy.ndimage.label with
    8-connectivity and a literal numpy transcription of the AUPRO procedure of
    spec 8 (index-based resampling, eps-regularised interp1d), numpy for IoU/F1.
Every file is a float32/uint8/int32/float64 .safetensors written by the tiny
writer below.
"""
import sys
from collections import deque

import numpy as np
from st_write import write_safetensors

OUT = "tests/data/detect"


def write_st_logged(path, tensors):
    print(f"wrote {path} ({write_safetensors(path, tensors)} bytes)")

# --------------------------------------------------------------------------- interp
def sec_interp():
    import torch
    import torch.nn.functional as F
    rng = np.random.RandomState(1)
    cases = [((3, 7, 5), (12, 9)), ((2, 16, 13), (5, 6)), ((1, 9, 9), (9, 9)), ((1, 6, 20), (11, 7)),
             ((2, 14, 14), (64, 64)), ((1, 1, 3), (4, 5))]
    t = {}
    for k, (shp, (oh, ow)) in enumerate(cases):
        x = rng.randn(*shp).astype(np.float32)
        xt = torch.from_numpy(x).unsqueeze(0)
        bl = F.interpolate(xt, size=(oh, ow), mode="bilinear", align_corners=False)[0].numpy()
        bc = F.interpolate(xt, size=(oh, ow), mode="bicubic", align_corners=True)[0].numpy()
        t[f"in{k}"] = x
        t[f"bilinear{k}"] = bl
        t[f"bicubic{k}"] = bc
    write_st_logged(f"{OUT}/interp.safetensors", t)


# --------------------------------------------------------------------------- anomaly map
def sec_anomaly():
    import torch
    import torch.nn.functional as F
    rng = np.random.RandomState(2)
    t = {}
    # Two configurations: (C, h, w) per scale and the output size.
    cfgs = [([(24, 16, 16), (40, 8, 8)], (64, 64)), ([(16, 12, 10), (8, 6, 5), (4, 3, 3)], (30, 25))]
    for k, (scales, (oh, ow)) in enumerate(cfgs):
        probs = []
        for l, shp in enumerate(scales):
            z = (rng.randn(*shp) * rng.uniform(0.5, 2.0)).astype(np.float32)
            z[:, : shp[1] // 3, : shp[2] // 3] *= 3.0  # a high-energy corner
            t[f"c{k}_z{l}"] = z
            zt = torch.from_numpy(z).unsqueeze(0)
            p = torch.exp(-0.5 * torch.mean(zt ** 2, dim=1, keepdim=True))
            probs.append(F.interpolate(p, size=(oh, ow), mode="bilinear", align_corners=False))
        a = 1.0 - torch.mean(torch.cat(probs, dim=1), dim=1)[0]
        t[f"c{k}_amap"] = a.numpy().astype(np.float32)
    write_st_logged(f"{OUT}/anomaly_map.safetensors", t)


# --------------------------------------------------------------------------- tree NFA (reference)
def components_at(q, h, w, t):
    """4-connected components of {q >= t} as a list of frozensets of flat indices (plain BFS)."""
    seen, comps = set(), []
    for p in range(h * w):
        if q[p] < t or p in seen:
            continue
        comp, todo = [p], deque([p])
        seen.add(p)
        while todo:
            a = todo.popleft()
            y, x = divmod(a, w)
            for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                if 0 <= yy < h and 0 <= xx < w:
                    b = yy * w + xx
                    if b not in seen and q[b] >= t:
                        seen.add(b)
                        comp.append(b)
                        todo.append(b)
        comps.append(frozenset(comp))
    return comps


def ref_tree_log10p(q, c, h, w):
    """Spec 7.1, literally: nodes = (level t, component K of {q >= t}) with a pixel of level t
    in K; parent = smallest strictly larger node; PRUNE/MERGE schedule on a dict tree."""
    q = np.asarray(q, dtype=np.float64).ravel()
    nodes = {}  # frozenset -> level
    for t in np.unique(q):
        for comp in components_at(q, h, w, t):
            if any(q[p] == t for p in comp):
                nodes[comp] = t
    sets = sorted(nodes, key=len)  # children before parents
    parent = {}
    for i, k in enumerate(sets):
        cands = [o for o in sets[i + 1:] if len(o) > len(k) and k < o]
        parent[k] = min(cands, key=len) if cands else None
    logp = {}
    for k, t in nodes.items():
        x = min(q[p] for p in k) / c
        logp[k] = len(k) * (-(c / 2.0) * (x - 1.0 - np.log(x)) / np.log(10.0))
    children = {k: [] for k in nodes}
    for k, pk in parent.items():
        if pk is not None:
            children[pk].append(k)

    def remove(n):  # re-attach n's children to n's parent and delete n
        pn = parent[n]
        for ch in children[n]:
            parent[ch] = pn
            if pn is not None:
                children[pn].append(ch)
        if pn is not None:
            children[pn].remove(n)
        del parent[n], children[n]

    def branch(leaf):
        out = [leaf]
        while parent[out[-1]] is not None and len(children[parent[out[-1]]]) == 1:
            out.append(parent[out[-1]])
        return out

    def prune():
        for leaf in [n for n in parent if not children[n]]:
            b = branch(leaf)
            vals = [logp[n] for n in b]
            m = vals.index(min(vals))
            for i, n in enumerate(b):
                if i != m:
                    remove(n)

    def depth(n):
        d = 0
        while parent[n] is not None:
            n, d = parent[n], d + 1
        return d

    def merge():
        merged = False
        for b in sorted([n for n in parent if len(children[n]) > 1], key=depth):
            if b not in parent or any(children[ch] for ch in children[b]):
                continue
            if logp[b] <= min(logp[ch] for ch in children[b]):
                merged = True
                for ch in list(children[b]):
                    remove(ch)
        return merged

    prune()
    m = merge()
    while m:
        prune()
        m = merge()
    prune()
    out = np.full(h * w, np.nan)
    for leaf in [n for n in parent if not children[n]]:
        b = branch(leaf)
        vals = [logp[n] for n in b]
        chosen = b[vals.index(min(vals))]
        for p in chosen:
            out[p] = logp[chosen]
    return out.reshape(h, w), len(nodes)


def log10_ntests_mp(sizes):
    from mpmath import mp, mpf, log10
    mp.dps = 50
    a, b = mpf("0.316915"), mpf("4.062570")
    total = mpf(0)
    for m in sizes:
        total += m * sum(a * b ** r / r for r in range(1, m + 1))
    return float(log10(total))


def sec_nfa_tree():
    import torch
    import torch.nn.functional as F
    rng = np.random.RandomState(3)
    t = {}
    t["log10nt_28_14"] = np.array([log10_ntests_mp([784, 196])], dtype=np.float64)
    t["log10nt_64_32_16"] = np.array([log10_ntests_mp([4096, 1024, 256])], dtype=np.float64)
    t["log10nt_12_6"] = np.array([log10_ntests_mp([144, 36])], dtype=np.float64)
    # Single-scale cases: (C, h, w, std, planted blob?)
    cases = [(4, 8, 8, 1.0, False), (16, 10, 12, 1.0, True), (64, 12, 12, 1.1, False), (8, 16, 16, 0.9, True),
             (2, 16, 13, 1.0, False), (32, 14, 14, 1.0, True), (3, 9, 11, 1.2, True), (96, 12, 12, 1.0, True)]
    for k, (c, h, w, std, blob) in enumerate(cases):
        z = (rng.randn(c, h, w) * std).astype(np.float32)
        if blob:
            y0, x0 = rng.randint(0, h - 4), rng.randint(0, w - 4)
            z[:, y0:y0 + 4, x0:x0 + 3] *= 2.0
        if k == 4:  # exact ties: quantise so that equal levels occur
            z = (np.round(z * 2) + 0.5) / 2  # never exactly 0
        q = (z.astype(np.float64) ** 2).sum(0)
        lp, nn = ref_tree_log10p(q, c, h, w)
        t[f"t{k}_z"] = z
        t[f"t{k}_lp"] = lp.astype(np.float32)
        t[f"t{k}_nnodes"] = np.array([nn], dtype=np.int32)
        print(f"tree case {k}: C={c} {h}x{w} nodes={nn} uncovered={np.isnan(lp).sum()} min={np.nanmin(lp):.3f}")
    # Two-scale score map: scales (C=48, 12x12) and (C=96, 6x6), planted blob at both, out 40x40.
    z1 = rng.randn(48, 12, 12).astype(np.float32)
    z2 = rng.randn(96, 6, 6).astype(np.float32)
    z1[:, 3:7, 4:8] *= 2.2
    z2[:, 1:4, 2:4] *= 2.0
    lps = []
    for z in (z1, z2):
        q = (z.astype(np.float64) ** 2).sum(0)
        lp, _ = ref_tree_log10p(q, z.shape[0], z.shape[1], z.shape[2])
        lps.append(F.interpolate(torch.from_numpy(np.nan_to_num(lp, nan=0.0).astype(np.float32))[None, None],
                                 size=(40, 40), mode="bilinear", align_corners=False)[0, 0])
    lpmin = torch.minimum(lps[0], lps[1]).numpy()
    t["s_z1"], t["s_z2"] = z1, z2
    t["s_score"] = (-(np.float32(log10_ntests_mp([144, 36])) + lpmin)).astype(np.float32)
    print(f"score case: max {t['s_score'].max():.2f}, detected {(t['s_score'] > 0).sum()} of 1600")
    # Rectangular grids (a non-square model, e.g. 512x128 -> 128x32 / 64x16 latents): scales
    # (C=40, 6x20) and (C=80, 3x10), out 24x80; its own generator so the cases above stay as they were.
    rr = np.random.RandomState(11)
    r1 = rr.randn(40, 6, 20).astype(np.float32)
    r2 = rr.randn(80, 3, 10).astype(np.float32)
    r1[:, 1:4, 13:18] *= 2.1
    r2[:, 0:2, 6:9] *= 1.9
    lps = []
    for z in (r1, r2):
        q = (z.astype(np.float64) ** 2).sum(0)
        lp, _ = ref_tree_log10p(q, z.shape[0], z.shape[1], z.shape[2])
        lps.append(F.interpolate(torch.from_numpy(np.nan_to_num(lp, nan=0.0).astype(np.float32))[None, None],
                                 size=(24, 80), mode="bilinear", align_corners=False)[0, 0])
    lpmin = torch.minimum(lps[0], lps[1]).numpy()
    t["r_z1"], t["r_z2"] = r1, r2
    t["log10nt_6x20_3x10"] = np.array([log10_ntests_mp([120, 30])], dtype=np.float64)
    t["r_score"] = (-(np.float32(log10_ntests_mp([120, 30])) + lpmin)).astype(np.float32)
    print(f"rectangular score case: max {t['r_score'].max():.2f}, detected {(t['r_score'] > 0).sum()} of 1920")
    write_st_logged(f"{OUT}/nfa_tree.safetensors", t)


# --------------------------------------------------------------------------- block NFA
def sec_block():
    import torch
    import torch.nn.functional as F
    from scipy import stats
    rng = np.random.RandomState(4)
    t = {}
    # Binomial tails: (x, n, p) rows; x non-integer on purpose (logsf floors it).
    rows = []
    for n in (9, 25, 49):
        for p in (0.1, 0.5, 1 - 0.9):
            for x in (-0.5, 0.0, 0.3, 1.7, 3.0, n / 3 + 0.25, n - 1.5, n - 0.2):
                rows.append((x, n, p, stats.binom.logsf(x, n, p) / np.log(10)))
    t["binom_rows"] = np.array(rows, dtype=np.float64)
    t["chi2_ppf"] = np.array([[q, stats.chi2.ppf(q, 1)] for q in (0.5, 0.9, 0.95, 0.99, 0.2, 0.999)],
                             dtype=np.float64)
    # Score maps: two scales, win 5 / pthr 0.9 and win 7 / pthr 0.5, output 24x24.
    z1 = rng.randn(20, 12, 12).astype(np.float32)
    z2 = rng.randn(24, 6, 6).astype(np.float32)
    z1[:, 2:6, 3:7] *= 2.5
    t["z1"], t["z2"] = z1, z2
    for tag, win, pthr in (("w5", 5, 0.9), ("w7", 7, 0.5)):
        tau = stats.chi2.ppf(pthr, 1)
        ups = []
        for sidx, z in enumerate((z1, z2)):
            hw = max(int((win / 2 ** sidx) // 2), 1)
            z2p = np.pad(z ** 2, ((0, 0), (hw, hw), (hw, hw)), mode="reflect")
            cnt = (z2p >= tau).sum(0)
            h, w = z.shape[1:]
            k = np.zeros((h, w))
            for dy in range(2 * hw + 1):
                for dx in range(2 * hw + 1):
                    k += cnt[dy:dy + h, dx:dx + w]
            lp = stats.binom.logsf(k / z.shape[0], (2 * hw + 1) ** 2, 1 - pthr) / np.log(10)
            t[f"{tag}_lp{sidx}"] = lp.astype(np.float32)
            ups.append(F.interpolate(torch.from_numpy(lp)[None, None], size=(24, 24), mode="bicubic",
                                     align_corners=True)[0, 0])
        lnt = np.log10(12 * 12 + 6 * 6)
        t[f"{tag}_score"] = (-(lnt + ups[0] + ups[1])).numpy().astype(np.float32)
        print(f"block {tag}: detected {(t[f'{tag}_score'] > 0).sum()} of 576")
    write_st_logged(f"{OUT}/nfa_block.safetensors", t)


# --------------------------------------------------------------------------- metrics
def interp1d_f32(ox, oy, nx):
    """Spec 8: piecewise-linear with an eps-regularised slope, searchsorted(left) - 1, clamped."""
    eps = np.float32(np.finfo(np.float32).eps)
    slope = (oy[1:] - oy[:-1]) / (eps + (ox[1:] - ox[:-1]))
    idx = np.clip(np.searchsorted(ox, nx, side="left") - 1, 0, len(ox) - 2)
    return (oy[idx] + slope[idx] * (nx - ox[idx])).astype(np.float32)


def roc_f32(y, s):
    """sklearn roc_curve (no point dropped: every distinct threshold plus the origin), with the
    FPR/TPR rounded the way float32 torch computes them (float(count) / float(total))."""
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    n_neg, n_pos = int((~y).sum()), int(y.sum())
    fps, tps = np.round(fpr * n_neg), np.round(tpr * n_pos)
    return (fps.astype(np.float32) / np.float32(n_neg)), (tps.astype(np.float32) / np.float32(n_pos))


def aupro_official(amap, gt, limit=0.3):
    """Spec 8, step by step, with scipy.ndimage.label (8-connectivity) and sklearn roc_curve."""
    from scipy import ndimage
    labels = np.zeros(gt.shape, np.int64)
    nid = 0
    for i in range(gt.shape[0]):
        lab, n = ndimage.label(gt[i] > 0, structure=np.ones((3, 3), dtype=int))
        labels[i] = np.where(lab > 0, lab + nid, 0)
        nid += n
    preds, cca, target = amap.ravel(), labels.ravel(), gt.ravel() > 0
    lim = np.float32(limit)
    fpr_g, _ = roc_f32(target, preds)
    out = int((fpr_g <= lim).sum())
    acc_t, acc_f = np.zeros(out), np.zeros(out)
    new_idx = np.arange(out, dtype=np.float32)
    bg = cca == 0
    for r in range(1, nid + 1):
        new_idx[-1] = out - 1
        mask = cca == r
        sel = bg | mask
        f, t = roc_f32(mask[sel], preds[sel])
        L = f[f > lim].min() if f[f <= lim].max() == 0 else lim
        idx = np.where(f <= L)[0]
        interp = False
        if not abs(f[idx].max() - lim) <= 1e-8 + 1e-5 * lim:  # torch.allclose
            tmp = np.searchsorted(f, lim, side="left")
            idx = np.concatenate([idx, [tmp]])
            slope = np.float32(1) - ((f[tmp] - lim) / (f[tmp] - f[tmp - 1]))
            interp = True
        fs, ts = f[idx], t[idx]
        x = idx.astype(np.float32)
        x /= x.max()
        x *= np.float32(out - 1)
        if interp:
            new_idx[-1] = x[-2] + ((x[-1] - x[-2]) * slope)
        acc_t += interp1d_f32(x, ts, new_idx)
        acc_f += interp1d_f32(x, fs, new_idx)
    tpr, fpr = acc_t / nid, acc_f / nid
    return float(np.trapz(tpr, fpr) / fpr[-1]), out, nid


def aupro_textbook(amap, gt, limit=0.3):
    """Mean per-region overlap vs global FPR at every distinct threshold, trapezoid to limit / limit."""
    from scipy import ndimage
    regions = []
    for i in range(gt.shape[0]):
        lab, n = ndimage.label(gt[i] > 0, structure=np.ones((3, 3), dtype=int))
        for k in range(1, n + 1):
            regions.append(amap[i][lab == k])
    bgv = amap[gt == 0]
    thr = np.unique(amap)[::-1]
    fpr = np.array([0.0] + [(bgv >= t).mean() for t in thr])
    pro = np.array([0.0] + [np.mean([(rv >= t).mean() for rv in regions]) for t in thr])
    area = 0.0
    for k in range(1, len(fpr)):
        if fpr[k] <= limit:
            area += (fpr[k] - fpr[k - 1]) * (pro[k] + pro[k - 1]) / 2
        else:
            pl = pro[k - 1] + (pro[k] - pro[k - 1]) * (limit - fpr[k - 1]) / (fpr[k] - fpr[k - 1])
            area += (limit - fpr[k - 1]) * (pl + pro[k - 1]) / 2
            break
    return area / limit


def miou_curve(score, gt):
    thr = np.arange(-400, 1001, dtype=np.float32)
    ious = []
    for i in range(score.shape[0]):
        s, g = score[i].ravel(), gt[i].ravel() > 0
        pred = s[None, :] > thr[:, None]  # NaN > thr is False
        inter = (pred & g[None, :]).sum(1)
        union = (pred | g[None, :]).sum(1)
        eps = np.finfo(float).eps
        ious.append((inter + eps) / (union + eps))
    return np.mean(ious, axis=0)


def make_eval_set(rng, n_img, h, w, kind):
    amap = np.zeros((n_img, h, w), np.float32)
    gt = np.zeros((n_img, h, w), np.uint8)
    score = np.zeros((n_img, h, w), np.float32)
    for i in range(n_img):
        good = i % 3 == 2
        if not good:
            for _ in range(rng.randint(1, 4)):
                y, x = rng.randint(0, h - 4), rng.randint(0, w - 4)
                gt[i, y:y + rng.randint(1, 5), x:x + rng.randint(1, 5)] = 1
            if i == 0:  # two diagonal-touching pixels: one region with 8-connectivity
                gt[i, 1, 1] = gt[i, 2, 2] = 1
        base = rng.rand(h, w).astype(np.float32) * 0.6
        a = np.where(gt[i] > 0, np.clip(base + rng.rand(h, w).astype(np.float32) * 0.7, 0, 1), base)
        if kind == "ties":
            a = np.round(a * 20) / 20
        elif kind == "edge":  # 40% of the normal pixels tie at the top value
            a = np.where(gt[i] > 0, rng.rand(h, w) * 0.45, rng.rand(h, w) * 0.5)
            a = np.where((gt[i] == 0) & (rng.rand(h, w) < 0.4), 0.9, a)
            a = np.where((gt[i] > 0) & (rng.rand(h, w) < 0.3), 1.0, a)
            a = np.where((gt[i] > 0) & (rng.rand(h, w) < 0.2), 0.9, a)
        amap[i] = a.astype(np.float32)
        sc = rng.randn(h, w) * 150 - 100 + gt[i] * rng.rand() * 400
        sc = np.where(rng.rand(h, w) < 0.05, np.round(sc), sc)  # exact integers: strict '>' matters
        sc = np.where(rng.rand(h, w) < 0.01, np.nan, sc)
        if i == 1:
            sc[0, 0], sc[0, 1] = 0.0, -0.0
        score[i] = sc.astype(np.float32)
    return amap, score, gt


def sec_metrics():
    from sklearn.metrics import roc_auc_score
    rng = np.random.RandomState(5)
    t = {}
    # plain AUROC with ties
    s = (rng.randint(0, 12, 300) / 4.0).astype(np.float32)
    y = (rng.rand(300) < 0.3 + 0.05 * s).astype(np.uint8)
    t["auc_scores"], t["auc_labels"] = s, y
    t["auc_ref"] = np.array([roc_auc_score(y, s)], np.float64)
    for kind, (n_img, h, w) in (("ties", (8, 24, 20)), ("cont", (6, 32, 32)), ("edge", (4, 16, 16))):
        amap, score, gt = make_eval_set(rng, n_img, h, w, kind)
        t[f"{kind}_amap"], t[f"{kind}_score"], t[f"{kind}_gt"] = amap, score, gt
        img_lab = (gt.reshape(n_img, -1).max(1) > 0).astype(int)
        ap, out, nreg = aupro_official(amap, gt)
        mi = miou_curve(score, gt)
        pred0 = score > 0
        g = gt > 0
        tp, fp, fn = (pred0 & g).sum(), (pred0 & ~g).sum(), (~pred0 & g).sum()
        ref = {
            "pixel_auroc": roc_auc_score(gt.ravel(), amap.ravel()),
            "image_auroc": roc_auc_score(img_lab, amap.reshape(n_img, -1).max(1)),
            "aupro": ap, "aupro_points": out, "n_regions": nreg,
            "aupro_textbook": aupro_textbook(amap, gt),
            "miou_auto": mi[400], "miou_oracle": mi.max(), "oracle_thr": int(np.argmax(mi)) - 400,
            "f1_auto": 2 * tp / (2 * tp + fp + fn),
        }
        t[f"{kind}_ref"] = np.array([ref[k] for k in ("pixel_auroc", "image_auroc", "aupro", "aupro_points",
                                                      "n_regions", "aupro_textbook", "miou_auto", "miou_oracle",
                                                      "oracle_thr", "f1_auto")], np.float64)
        t[f"{kind}_miou"] = mi.astype(np.float64)
        print(kind, {k: round(float(v), 6) for k, v in ref.items()})
    write_st_logged(f"{OUT}/metrics.safetensors", t)


def sec_smooth():
    """uf_map_smooth against scipy's Gaussian filter (mode reflect, truncate 4): maps with a
    few peaks, sigmas per axis, one kernel wider than its map (repeated mirroring)."""
    from scipy import ndimage
    rng = np.random.RandomState(5)
    t = {}
    cfgs = [((37, 53), 4.0, 4.0), ((20, 300), 2.5, 6.0), ((5, 7), 4.0, 3.0), ((64, 48), 16.0, 0.0),
            ((9, 11), 0.3, 1.0)]
    for k, ((h, w), sx, sy) in enumerate(cfgs):
        m = rng.uniform(0.0, 0.2, (h, w)).astype(np.float32)
        for _ in range(3):
            m[rng.randint(h), rng.randint(w)] = 1.0
        ref = m.astype(np.float64)
        if sx > 0:
            ref = ndimage.gaussian_filter1d(ref, sx, axis=1, mode="reflect", truncate=4.0)
        if sy > 0:
            ref = ndimage.gaussian_filter1d(ref, sy, axis=0, mode="reflect", truncate=4.0)
        t[f"c{k}_map"] = m
        t[f"c{k}_sigma"] = np.array([sx, sy], np.float32)
        t[f"c{k}_ref"] = ref.astype(np.float32)
    write_st_logged(f"{OUT}/map_smooth.safetensors", t)


SECTIONS = {"interp": sec_interp, "anomaly": sec_anomaly, "smooth": sec_smooth, "nfa_tree": sec_nfa_tree, "block": sec_block,
            "metrics": sec_metrics}

if __name__ == "__main__":
    names = sys.argv[1:] or list(SECTIONS)
    for n in names:
        SECTIONS[n]()
