"""The tree NFA of spec 7.1 in NumPy (and plain Python for the tree), the PyTorch side's
baseline for `make bench-compare`. Written from the spec; the official code (skimage max_tree
+ networkx) is slower still (983 ms/image at resnet18@256 measured on a Zen 3).

score(zs, out) -> -log10 NFA map (out x out) for the latents zs = [z_l (C, h, w), ...].
"""
import math

import numpy as np
import torch
import torch.nn.functional as F

ALPHA, BETA = 0.316915, 4.062570


def component_tree(s):
    """Upper-level-set component tree of s (h, w), 4-connectivity, equal levels merged.
    Returns level, parent (-1: root), children lists and each node's own pixels."""
    h, w = s.shape
    flat = s.ravel()
    n = flat.size
    order = np.lexsort((np.arange(n), -flat))
    uf = np.arange(n)
    done = np.zeros(n, bool)
    node_of = np.zeros(n, np.int64)
    level, parent, children, own = [], [], [], []

    def find(a):
        while uf[a] != a:
            uf[a] = uf[uf[a]]
            a = uf[a]
        return a

    for p in order:
        p = int(p)
        nd = len(level)
        level.append(flat[p])
        parent.append(-1)
        children.append([])
        own.append([p])
        node_of[p] = nd
        done[p] = True
        y, x = divmod(p, w)
        for q in ((p - w) if y > 0 else -1, (p + w) if y < h - 1 else -1, (p - 1) if x > 0 else -1,
                  (p + 1) if x < w - 1 else -1):
            if q < 0 or not done[q]:
                continue
            rp, rq = find(p), find(q)
            if rp == rq:
                continue
            a, b = node_of[rp], node_of[rq]
            if level[b] == level[a]:  # one node per (level, component): merge b into a
                for c in children[b]:
                    parent[c] = a
                children[a] += children[b]
                own[a] += own[b]
                children[b], own[b], parent[b] = [], [], -2
            else:
                parent[b] = a
                children[a].append(b)
            uf[rq] = rp
            node_of[rp] = a
    return level, parent, children, own


def scale_log10p(z):
    """Step 1-4 of spec 7.1 for one scale: LP (h, w), NaN where no final leaf covers a pixel."""
    C, h, w = z.shape
    q = np.sum(z.astype(np.float64) ** 2, axis=0)
    s = q / C
    level, parent, children, own = component_tree(s)
    alive = [i for i in range(len(level)) if parent[i] != -2]
    # R(n): own pixels of the subtree; x(n) = min over R of Q / C = the node's level
    area = {}
    for i in sorted(alive, key=lambda i: level[i], reverse=True):  # children (higher levels) first
        area[i] = len(own[i]) + sum(area[c] for c in children[i])
    lp = {}
    for i in alive:
        x = max(level[i], 1e-300)
        lp[i] = area[i] * (-(C / 2.0) * (x - 1.0 - math.log(x)) / math.log(10.0))
    orig_children = {i: list(children[i]) for i in alive}
    par = {i: parent[i] for i in alive}
    kids = {i: list(children[i]) for i in alive}

    def prune():
        for leaf in [i for i in list(kids) if not kids[i]]:
            if leaf not in kids:
                continue
            branch, cur = [leaf], leaf
            while par[cur] != -1 and len(kids[par[cur]]) == 1:
                cur = par[cur]
                branch.append(cur)
            best = min(range(len(branch)), key=lambda k: (lp[branch[k]], k))
            m, top = branch[best], branch[-1]
            above = par[top]
            for d in branch:
                if d != m:
                    del kids[d]
                    del par[d]
            par[m], kids[m] = above, []
            if above != -1:
                kids[above] = [m if c == top else c for c in kids[above]]

    def merge():
        merged = False
        roots = [i for i in kids if par[i] == -1]
        stack = list(roots)
        while stack:  # parent before child
            b = stack.pop()
            if b not in kids:
                continue
            ch = kids[b]
            stack += ch
            if len(ch) >= 2 and not any(kids[c] for c in ch) and lp[b] <= min(lp[c] for c in ch):
                for c in ch:
                    del kids[c]
                    del par[c]
                kids[b] = []
                merged = True
        return merged

    prune()
    m = merge()
    while m:
        prune()
        m = merge()
    prune()
    out = np.full(h * w, np.nan)
    for leaf in [i for i in kids if not kids[i]]:
        stack, pix = [leaf], []
        while stack:  # R(leaf) in the original tree
            i = stack.pop()
            pix += own[i]
            stack += orig_children[i]
        out[pix] = lp[leaf]
    return out.reshape(h, w)


def log10_n_tests(sizes):
    terms = []
    for hw in sizes:
        r = np.arange(1, hw + 1, dtype=np.float64)
        terms.append(math.log(hw) + math.log(ALPHA) + r * math.log(BETA) - np.log(r))
    t = np.concatenate(terms)
    mx = t.max()
    return (mx + math.log(np.exp(t - mx).sum())) / math.log(10.0)


def score(zs, out):
    lps = []
    for z in zs:
        lp = np.nan_to_num(scale_log10p(z), nan=0.0)
        up = F.interpolate(torch.from_numpy(lp)[None, None], size=(out, out), mode="bilinear", align_corners=False)
        lps.append(up[0, 0].numpy())
    lpmin = np.min(np.stack(lps), axis=0)
    return -(log10_n_tests([z.shape[1] * z.shape[2] for z in zs]) + lpmin)
