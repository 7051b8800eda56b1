"""The network: a small 2-D CNN over 2.5-D slices from three planes, aggregated per volume.

Per slice: a lossless 2x2 space-to-depth (so no pixel is dropped: noise, spikes and ringing live at full
resolution), five convolutional stages with residual blocks, global average and max pooling, the slice's pixel
spacing (log2 mm) as side input, and an MLP giving per artifact a logit, a rescan logit and a severity logit.
Per volume: each output is a mix of the mean and the top-k mean of its slice logits (multiple-instance pooling:
a spike or a fold-over may show in a few slices only), then an affine calibration; the mix and the calibration
are fitted on validation volumes after the slice-level training. The slice logits say which slices drove the
score. The mean hidden vector of the MLP is the volume's embedding (for the out-of-distribution gate).
An ensemble (``EnsembleQCNet``) averages the slice logits of several such networks and pools them the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

N_ART = 7
N_OUT = 2 * N_ART + 1  # artifact logits, rescan logit, severity logits


def _conv(ci: int, co: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = _conv(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.b(self.a(x)))


class SliceEncoder(nn.Module):
    """2x2 space-to-depth, one convolution at half resolution, then stride-2 stages with a residual block each."""

    def __init__(self, widths: tuple[int, ...] = (24, 32, 64, 96, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.PixelUnshuffle(2), _conv(12, widths[0])]
        ci = widths[0]
        for co in widths[1:]:
            layers += [_conv(ci, co, 2), ResBlock(co)]
            ci = co
        self.body = nn.Sequential(*layers)
        self.out_dim = 2 * ci

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            # mixed-precision training: the stem sees the pixels in float32, so the faint texture of noise and
            # ringing is not rounded to bfloat16's 8-bit mantissa before the first convolution has read it
            with torch.autocast(x.device.type, enabled=False):
                f = self.body[:2](x.float())  # space-to-depth and the first convolution
            f = self.body[2:](f)
        else:
            f = self.body(x)
        return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)


class PooledNet(nn.Module):
    """Slice outputs -> volume outputs: the multiple-instance pooling and affine calibration shared by one network
    and an ensemble. Subclasses give ``slice_forward`` and ``config``."""

    config: dict[str, Any]

    def __init__(self, top_k: int) -> None:
        super().__init__()
        self.mix = nn.Parameter(torch.zeros(N_OUT))  # sigmoid(mix): weight of the top-k mean vs the mean
        # per-output affine calibration of the volume logits (fitted on validation volumes after training)
        self.calib_a = nn.Parameter(torch.ones(N_OUT))
        self.calib_b = nn.Parameter(torch.zeros(N_OUT))
        self.top_k = top_k

    def slice_forward(self, slices: torch.Tensor, side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def aggregate(self, slice_out: torch.Tensor, n: int) -> torch.Tensor:
        """(B*N, C) slice logits -> (B, C) volume logits."""
        x = slice_out.reshape(-1, n, slice_out.shape[-1])
        k = min(self.top_k, n)
        top = torch.topk(x, k, dim=1).values.mean(dim=1)
        w = torch.sigmoid(self.mix)
        return self.calib_a * (w * top + (1 - w) * x.mean(dim=1)) + self.calib_b

    def forward(self, slices: torch.Tensor, side: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """Volume logits (B, C), slice logits (B*N, C), volume embeddings (B, H)."""
        s, h = self.slice_forward(slices, side)
        return self.aggregate(s, n), s, h.reshape(-1, n, h.shape[-1]).mean(dim=1)


class QCNet(PooledNet):
    """slices (B*N, 3, S, S), side (B*N, 3) -> slice outputs (B*N, 15) and hidden (B*N, H)."""

    def __init__(self, widths: tuple[int, ...] = (24, 32, 64, 96, 128), hidden: int = 128, top_k: int = 3) -> None:
        super().__init__(top_k)
        self.encoder = SliceEncoder(widths)
        self.mlp = nn.Sequential(nn.Linear(self.encoder.out_dim + 3, hidden), nn.ReLU(inplace=True))
        self.head = nn.Linear(hidden, N_OUT)
        self.config = {"widths": list(widths), "hidden": hidden, "top_k": top_k}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> QCNet:
        return cls(tuple(config["widths"]), config["hidden"], config["top_k"])

    def slice_forward(self, slices: torch.Tensor, side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(torch.cat([self.encoder(slices), side], dim=1))
        return self.head(h), h


class EnsembleQCNet(PooledNet):
    """Several QCNets trained apart (other seeds), scored as one model: their slice logits are averaged (each
    member's own pooling and calibration are not used) and pooled and calibrated once, by the ensemble's own
    parameters fitted on validation volumes; the embedding is the members' hidden vectors side by side. The
    members are frozen: only the ensemble's pooling and calibration are fitted.
    Averaging cancels only the errors in which the members disagree (docs/model-experiments.md: qc-v14 and the
    ensemble of qc-v11 to qc-v13 measure how few of the real false alarms those were)."""

    def __init__(self, members: list[QCNet], top_k: int = 3) -> None:
        super().__init__(top_k)
        self.members = nn.ModuleList(members)
        for p in self.members.parameters():
            p.requires_grad_(False)
        self.config = {"members": [m.config for m in members], "top_k": top_k}

    def slice_forward(self, slices: torch.Tensor, side: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outs = [m.slice_forward(slices, side) for m in self.members]
        return torch.stack([o[0] for o in outs]).mean(dim=0), torch.cat([o[1] for o in outs], dim=1)


def build(config: dict[str, Any]) -> PooledNet:
    """The network a checkpoint's ``config`` describes (one QCNet or an ensemble of them)."""
    if "members" in config:
        return EnsembleQCNet([QCNet.from_config(c) for c in config["members"]], config["top_k"])
    return QCNet.from_config(config)


class ExportWrapper(nn.Module):
    """One volume for ONNX: slices (N, 3, S, S), side (N, 3) -> probabilities (7), rescan (1), severity (7),
    slice_probabilities (N, 8) (artifacts then rescan), embedding (H)."""

    def __init__(self, net: PooledNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, slices: torch.Tensor, side: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s, h = self.net.slice_forward(slices, side)
        v = self.net.aggregate(s, s.shape[0])[0]  # the pooling the calibration was fitted with, not a copy of it
        probs = torch.sigmoid(v[:N_ART])
        rescan = torch.sigmoid(v[N_ART:N_ART + 1])
        severity = torch.sigmoid(v[N_ART + 1:])
        slice_probs = torch.sigmoid(s[:, : N_ART + 1])
        return probs, rescan, severity, slice_probs, h.mean(dim=0)
