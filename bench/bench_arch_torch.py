"""PyTorch half of the architecture benchmark: one training step of each SAE
architecture stated in plain torch as users write it (dense codes, dense
decoder, autograd, clip_grad_norm_ 1.0, AdamW), 2 threads. Same shapes as
bench_train_torch.py. Prints one RESULT line per (arch, shape).

    standard   relu(enc(x - b)); loss = ||x - x_hat||^2 + lmbda * sum f * ||W_dec col||
    gated      shared W; gate = W(x-b)+b_gate, mag = exp(r_mag) W(x-b) + b_mag;
               L1 on relu(gate) * ||W_dec col||; aux recon through W_dec.detach()
    jumprelu   autograd.Function JumpReLU / Heaviside with rectangle-kernel STE, L0
    batchtopk  top (k * B) of relu(pre) over the flattened batch
    matryoshka topk (or batchtopk); each nested prefix reconstructs (mean of losses)

Usage: python bench/bench_arch_torch.py [--threads 2] [--steps 3] [--arch A ...] [--shape d,n,k,B ...]
"""

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Heaviside(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, thr, eps):
        ctx.save_for_backward(pre, thr)
        ctx.eps = eps
        return (pre > thr).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, thr = ctx.saved_tensors
        k = ((pre - thr).abs() < ctx.eps / 2).to(pre.dtype)
        return None, (-(1.0 / ctx.eps) * k * g).sum(0), None


class JumpReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pre, thr, eps):
        ctx.save_for_backward(pre, thr)
        ctx.eps = eps
        return pre * (pre > thr).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, thr = ctx.saved_tensors
        k = ((pre - thr).abs() < ctx.eps / 2).to(pre.dtype)
        return g * (pre > thr).to(pre.dtype), (-(thr / ctx.eps) * k * g).sum(0), None


class SAE(nn.Module):
    def __init__(self, arch, d, n, k, groups=None, batch=False):
        super().__init__()
        self.arch, self.k, self.batch = arch, k, batch
        self.encoder = nn.Linear(d, n, bias=arch != "gated")
        self.decoder = nn.Linear(n, d, bias=False)
        self.bias = nn.Parameter(torch.zeros(d))
        with torch.no_grad():
            w = self.encoder.weight.data.T.clone()
            self.decoder.weight.data = w / w.norm(dim=0, keepdim=True)
        if arch == "gated":
            self.r_mag = nn.Parameter(torch.zeros(n))
            self.gate_bias = nn.Parameter(torch.zeros(n))
            self.mag_bias = nn.Parameter(torch.zeros(n))
        if arch == "jumprelu":
            self.logthres = nn.Parameter(torch.full((n,), 0.001).log())
        self.groups = groups or [n]

    def loss(self, x, lmbda=0.01, eps=0.001):
        xc = x - self.bias
        if self.arch == "gated":
            pre = self.encoder(xc)
            gate = pre + self.gate_bias
            mag = torch.exp(self.r_mag) * pre + self.mag_bias
            f = (gate > 0).to(x.dtype) * F.relu(mag)
            x_hat = self.decoder(f) + self.bias
            g = F.relu(gate)
            x_aux = F.linear(g, self.decoder.weight.detach()) + self.bias.detach()
            nrm = self.decoder.weight.norm(dim=0)
            return (((x - x_hat) ** 2).sum(-1).mean() + lmbda * (g * nrm).sum(-1).mean()
                    + ((x - x_aux) ** 2).sum(-1).mean())
        pre = self.encoder(xc)
        if self.arch == "standard":
            f = F.relu(pre)
            x_hat = self.decoder(f) + self.bias
            nrm = self.decoder.weight.norm(dim=0)
            return ((x - x_hat) ** 2).sum(-1).mean() + lmbda * (f * nrm).sum(-1).mean()
        if self.arch == "jumprelu":
            thr = self.logthres.exp()
            f = JumpReLU.apply(pre, thr, eps)
            x_hat = self.decoder(f) + self.bias
            l0 = Heaviside.apply(pre, thr, eps).sum(-1).mean()
            return ((x - x_hat) ** 2).sum(-1).mean() + lmbda * l0
        z = F.relu(pre)
        if self.batch or self.arch == "batchtopk":
            flat = z.flatten()
            v, i = flat.topk(self.k * x.shape[0], sorted=False)
            f = torch.zeros_like(flat).scatter(-1, i, v).view_as(z)
        else:
            v, i = z.topk(self.k, dim=-1, sorted=False)
            f = torch.zeros_like(z).scatter(-1, i, v)
        if self.arch == "matryoshka":
            total, end = 0.0, 0
            for g in self.groups:
                end += g
                x_hat = f[:, :end] @ self.decoder.weight[:, :end].T + self.bias
                total = total + ((x - x_hat) ** 2).sum(-1).mean()
            return total / len(self.groups)
        x_hat = self.decoder(f) + self.bias
        return ((x - x_hat) ** 2).sum(-1).mean()


def run(label, d, n, k, B, steps):
    torch.manual_seed(0)
    arch = "matryoshka" if label.startswith("matryoshka") else label
    groups = [n // 8, n // 8, n // 4, n - n // 2] if arch == "matryoshka" else None
    sae = SAE(arch, d, n, k, groups, batch=label == "matryoshka-batchtopk")
    opt = torch.optim.AdamW(sae.parameters(), lr=3e-4, betas=(0.9, 0.999), weight_decay=0.0)
    x = torch.randn(B, d)

    def step():
        loss = sae.loss(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        opt.step()

    step()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    best = min(ts)
    print(f"torch {torch.__version__} {label} d={d} n={n} k={k} B={B}: step best {best:.3f} s "
          f"({B / best:.1f} samples/s), median {statistics.median(ts):.3f} s", flush=True)
    print(f"RESULT arch={label} d={d} n={n} k={k} B={B} samples_per_s={B / best:.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--arch", action="append", default=[])
    ap.add_argument("--shape", action="append", default=[])
    ap.add_argument("--sparse", action="store_true",
                    help="accepted for symmetry with bench_arch; a dense torch step costs the same")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    shapes = [tuple(int(v) for v in s.split(",")) for s in a.shape] or [
        (1024, 4096, 32, 4096), (3072, 12288, 64, 1024)]
    archs = a.arch or ["standard", "gated", "jumprelu", "batchtopk", "matryoshka", "matryoshka-batchtopk"]
    for sh in shapes:
        for ar in archs:
            run(ar, *sh, a.steps)


if __name__ == "__main__":
    main()
