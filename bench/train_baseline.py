#!/usr/bin/python3
"""Baseline for braid's training speed: PyTorch (Debian's python3-torch) training the model a
braid spec describes, written with plain torch ops, on the CPU.

This is a baseline to compare against, not part of braid. It reads the same spec JSON as
`braid train`, builds the same architecture (attention with RoPE, Gated DeltaNet in its chunked
form, SwiGLU MLP, RMSNorm, tied embeddings), and times AdamW steps on random tokens. It prints
the parameter count (to check it matches braid's) and the median tokens/s over the timed steps.

    /usr/bin/python3 bench/train_baseline.py --spec bench/specs/train-llama-10m.json \
        --batch 8 --seq 256 --steps 10 --threads 2
"""
import argparse
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return rmsnorm(x, self.weight, self.eps)


def rope_tables(T, dim, theta):
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cos(ang).float(), torch.sin(ang).float()


def apply_rope(x, cos, sin):  # x: [B, H, T, D], rotate-half layout
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, d, m):
        super().__init__()
        self.nh, self.nkv, self.hd = m["n_heads"], m.get("n_kv_heads", m["n_heads"]), m["head_dim"]
        self.theta = m.get("rope_theta", 10000.0)
        self.q = nn.Linear(d, self.nh * self.hd, bias=False)
        self.k = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.v = nn.Linear(d, self.nkv * self.hd, bias=False)
        self.o = nn.Linear(self.nh * self.hd, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        cos, sin = rope_tables(T, self.hd, self.theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.nkv != self.nh:
            k = k.repeat_interleave(self.nh // self.nkv, dim=1)
            v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
        o = torch.softmax(s, dim=-1) @ v
        return self.o(o.transpose(1, 2).reshape(B, T, self.nh * self.hd))


def gated_delta_chunked(q, k, v, beta, g, C):
    """Chunked gated delta rule. q, k: [B, H, T, K] (normalised, q scaled); v: [B, H, T, V];
    beta, g (log decay): [B, H, T]. Within a chunk the delta-rule updates are one unit
    lower-triangular solve (the WY form); the state is carried across chunks."""
    B, H, T, K = q.shape
    V = v.shape[-1]
    pad = (C - T % C) % C
    if pad:  # zero keys, values, beta and decay leave the state unchanged
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))
    n = (T + pad) // C
    q, k, v = (t.reshape(B, H, n, C, -1) for t in (q, k, v))
    beta, g = beta.reshape(B, H, n, C), g.reshape(B, H, n, C)
    c = g.cumsum(-1)
    lower = torch.tril(torch.ones(C, C, dtype=torch.bool))
    decay = torch.exp((c[..., :, None] - c[..., None, :]).masked_fill(~lower, float("-inf")))
    strict = torch.tril(torch.ones(C, C, dtype=torch.bool), -1)
    A = ((k @ k.transpose(-1, -2)) * decay * beta[..., :, None]).masked_fill(~strict, 0.0)
    eye = torch.eye(C)
    rhs = torch.cat([beta[..., None] * v, (beta * torch.exp(c))[..., None] * k], dim=-1)
    UW = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)
    U, W = UW[..., :V], UW[..., V:]
    P = (q @ k.transpose(-1, -2)) * decay
    S = q.new_zeros(B, H, K, V)
    outs = []
    for i in range(n):
        ci = c[:, :, i]
        vnew = U[:, :, i] - W[:, :, i] @ S
        outs.append(P[:, :, i] @ vnew + (q[:, :, i] * torch.exp(ci)[..., None]) @ S)
        last = ci[..., -1:]
        kd = k[:, :, i] * torch.exp(last - ci)[..., None]
        S = torch.exp(last)[..., None] * S + kd.transpose(-1, -2) @ vnew
    return torch.stack(outs, dim=2).reshape(B, H, n * C, V)[:, :, :T]


class GatedDeltaNet(nn.Module):
    def __init__(self, d, m):
        super().__init__()
        self.nk, self.nv = m["n_k_heads"], m.get("n_v_heads", m["n_k_heads"])
        self.dk = m["head_k_dim"]
        self.dv = m.get("head_v_dim", self.dk)
        self.d_conv, self.chunk = m.get("d_conv", 4), m.get("chunk", 64)
        self.eps = m.get("norm_eps", 1e-6)
        kd, vd = self.nk * self.dk, self.nv * self.dv
        self.in_qkvz = nn.Linear(d, 2 * kd + 2 * vd, bias=False)
        self.in_ba = nn.Linear(d, 2 * self.nv, bias=False)
        self.conv = nn.Parameter(torch.randn(2 * kd + vd, 1, self.d_conv) * 0.1)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, self.nv + 1, dtype=torch.float32)))
        self.dt_bias = nn.Parameter(torch.full((self.nv,), -2.0))
        self.norm = nn.Parameter(torch.ones(self.dv))
        self.out = nn.Linear(vd, d, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        kd, vd = self.nk * self.dk, self.nv * self.dv
        qkv, z = self.in_qkvz(x).split([2 * kd + vd, vd], dim=-1)
        b, a = self.in_ba(x).split([self.nv, self.nv], dim=-1)
        qkv = F.conv1d(F.pad(qkv.transpose(1, 2), (self.d_conv - 1, 0)), self.conv, groups=qkv.shape[-1])
        q, k, v = F.silu(qkv).transpose(1, 2).split([kd, kd, vd], dim=-1)
        q = F.normalize(q.reshape(B, T, self.nk, self.dk), dim=-1, eps=1e-6) / math.sqrt(self.dk)
        k = F.normalize(k.reshape(B, T, self.nk, self.dk), dim=-1, eps=1e-6)
        r = self.nv // self.nk
        if r > 1:
            q, k = q.repeat_interleave(r, dim=2), k.repeat_interleave(r, dim=2)
        v = v.reshape(B, T, self.nv, self.dv)
        beta = torch.sigmoid(b)
        g = -torch.exp(self.A_log) * F.softplus(a + self.dt_bias)
        o = gated_delta_chunked(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                beta.transpose(1, 2), g.transpose(1, 2), self.chunk)
        o = rmsnorm(o.transpose(1, 2), self.norm, self.eps).reshape(B, T, vd)
        return self.out(o * F.silu(z))


class Mlp(nn.Module):
    def __init__(self, d, m):
        super().__init__()
        if not m.get("gated", True) or m.get("activation", "silu") != "silu" or m.get("bias", False):
            sys.exit("train_baseline: only the gated SiLU MLP without bias is written here")
        self.gate = nn.Linear(d, m["hidden"], bias=False)
        self.up = nn.Linear(d, m["hidden"], bias=False)
        self.down = nn.Linear(m["hidden"], d, bias=False)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, d, eps, mixer, mlp):
        super().__init__()
        kinds = {"attention": Attention, "gated_deltanet": GatedDeltaNet}
        if mixer["type"] not in kinds:
            sys.exit(f"train_baseline: mixer type '{mixer['type']}' is not written here")
        self.n1, self.mixer = RMSNorm(d, eps), kinds[mixer["type"]](d, mixer)
        self.n2, self.mlp = RMSNorm(d, eps), Mlp(d, mlp)

    def forward(self, x):
        x = x + self.mixer(self.n1(x))
        return x + self.mlp(self.n2(x))


class Model(nn.Module):
    def __init__(self, spec):
        super().__init__()
        d, eps = spec["d_model"], spec.get("norm_eps", 1e-6)
        if not spec.get("tie_embeddings", True):
            sys.exit("train_baseline: only tied embeddings are written here")
        layers = spec["layers"]
        names = layers["pattern"] * layers.get("repeat", 1) if isinstance(layers, dict) else layers
        if not all(isinstance(n, str) for n in names):
            sys.exit("train_baseline: only layers named by a mixer are written here")
        self.embed = nn.Embedding(spec["vocab_size"], d)
        self.blocks = nn.ModuleList(Block(d, eps, spec["mixers"][n], spec["mlp"]) for n in names)
        self.norm = RMSNorm(d, eps)
        for p in self.parameters():
            if p.dim() >= 2 and p is not self.embed.weight:
                nn.init.normal_(p, std=0.02)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.norm(x) @ self.embed.weight.t()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 2 untimed)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = json.load(open(a.spec))
    model = Model(spec)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2 and p is not model.embed.weight]
    rest = [p for p in model.parameters() if not (p.dim() >= 2 and p is not model.embed.weight)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95))
    V = spec["vocab_size"]
    rates, losses = [], []
    for step in range(a.steps + 2):
        data = torch.randint(0, V, (a.batch, a.seq + 1))
        t0 = time.perf_counter()
        logits = model(data[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, V), data[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if step >= 2:
            rates.append(a.batch * a.seq / dt)
    print(json.dumps({"impl": f"pytorch {torch.__version__}", "spec": a.spec, "params": n_params,
                      "threads": a.threads, "batch": a.batch, "seq": a.seq, "steps": a.steps,
                      "median_tokens_per_s": statistics.median(rates), "min_tokens_per_s": min(rates),
                      "max_tokens_per_s": max(rates), "first_loss": losses[0]}))


if __name__ == "__main__":
    main()
