"""``--amp bf16``: mixed-precision training steps, with the network's first convolution kept in float32 and the
exported model unchanged (float32 weights, ONNX parity against torch)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import torch

from qc_daemon.scoring.model import METADATA_KEY
from training import export, train
from training.net import QCNet

from .phantom import head_folder, linked_run, tiny_run

TINY = tiny_run(7)


def _conv_dtypes(net: QCNet, x: torch.Tensor, side: torch.Tensor, amp: bool) -> tuple[torch.dtype, torch.dtype,
                                                                                       torch.Tensor]:
    seen: dict[str, torch.dtype] = {}
    stem, second = net.encoder.body[1][0], net.encoder.body[2][0]
    hooks = [m.register_forward_hook(lambda _m, _i, o, k=k: seen.__setitem__(k, o.dtype))
             for k, m in (("stem", stem), ("second", second))]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out, _ = net.slice_forward(x, side)
    for h in hooks:
        h.remove()
    return seen["stem"], seen["second"], out.float()


def test_autocast_keeps_the_stem_in_float32_and_the_rest_in_bfloat16() -> None:
    torch.manual_seed(0)
    net = QCNet((8, 8, 16, 16, 16)).eval()
    x, side = torch.rand(4, 3, 64, 64), torch.rand(4, 3)
    stem, second, out_amp = _conv_dtypes(net, x, side, amp=True)
    assert (stem, second) == (torch.float32, torch.bfloat16)
    stem, second, out_fp32 = _conv_dtypes(net, x, side, amp=False)
    assert (stem, second) == (torch.float32, torch.float32)
    # the same function, to bfloat16's precision
    assert not torch.equal(out_amp, out_fp32)
    assert torch.allclose(out_amp, out_fp32, atol=0.05, rtol=0.05)


def test_bf16_training_records_its_precision_and_exports_a_float32_model(tmp_path: Path) -> None:
    heads = head_folder(tmp_path)
    fp32 = tmp_path / "fp32"
    train.train(train.parse_args(["--out", str(fp32), "--nifti", str(heads), *TINY]))
    amp = linked_run(tmp_path, "amp", fp32)
    train.train(train.parse_args(["--out", str(amp), "--nifti", str(heads), *TINY, "--amp", "bf16"]))

    a = torch.load(fp32 / "model.pt", weights_only=False)
    b = torch.load(amp / "model.pt", weights_only=False)
    assert a["precision"] == {"training": "float32"}
    assert b["precision"] == {"training": "bfloat16 autocast"}
    # same data and seed: the two runs differ by the precision of their steps only, and that shows in the weights
    assert all(v.dtype == a["model"][k].dtype for k, v in b["model"].items())
    assert any(not torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    onnx_path = tmp_path / "amp.onnx"
    export.export(amp, onnx_path, "amp", "0.0.1", tolerance=1e-4, parity_inputs=export.bank_examples(amp, 2))
    assert json.loads(onnx_path.with_suffix(".parity.json").read_text())["max_abs_diff"] < 1e-4
    # the shipped file says how its network was trained; the exported graph itself is float32
    model = onnx.load(str(onnx_path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    assert meta["precision"] == {"training": "bfloat16 autocast"}
    real = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
    assert {t.data_type for t in model.graph.initializer} & real == {onnx.TensorProto.FLOAT}
