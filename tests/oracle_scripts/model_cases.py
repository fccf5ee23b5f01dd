"""Run many reference cases in one process (importing the reference is slow).

args: {"cases": [{"name", "model_dir", "mode": "forward" | "inference", "options": {...}}]}
inputs per case, prefixed "<name>/": forward: x (1,S,3,H,W), optional extrinsics/intrinsics (1,S,...);
inference: img_0..img_{n-1} uint8, optional extrinsics (N,4,4)/intrinsics (N,3,3).
outputs: "<name>/<key>" for every output (ray maps captured from the head, reference view index,
Gaussians), in fp32 with autocast off; a forward case with options {"precision": "bf16"} runs the reference's
own bf16 autocast instead (its API forward, as on a GPU with bf16).
"""

import json
import sys

import depth_anything_3.model.dinov2.vision_transformer as vt
import numpy as np
import torch
from depth_anything_3.api import DepthAnything3

inputs, args = np.load(sys.argv[1]), json.loads(open(sys.argv[2]).read())
captured = {}
_select = vt.select_reference_view
vt.select_reference_view = lambda x, strategy: captured.setdefault("ref_view_idx", _select(x, strategy))
models = {}


def load(model_dir):
    if model_dir not in models:
        model = DepthAnything3.from_pretrained(model_dir).eval()
        net = model.model
        head = net.da3.head if hasattr(net, "da3") else net.head
        original = head.forward

        def forward(*a, **k):
            out = original(*a, **k)
            captured.update({key: out[key].clone() for key in ("ray", "ray_conf") if key in out})
            return out

        head.forward = forward

        def forward_fp32(image, *a, net=net):
            # fp32 on CPU: the reference autocasts to fp16 there by default.
            with torch.no_grad():
                return net(image, *a)

        model.forward = forward_fp32
        models[model_dir] = model
    return models[model_dir]


result = {}
for case in args["cases"]:
    name, opts = case["name"], case.get("options", {})
    model = load(case["model_dir"])
    get = lambda key, name=name: inputs[f"{name}/{key}"] if f"{name}/{key}" in inputs.files else None  # noqa: E731
    captured.clear()
    torch.manual_seed(opts.get("seed", 0))
    if case["mode"] == "forward":
        ext, ixt = get("extrinsics"), get("intrinsics")
        ext_t = None if ext is None else model._normalize_extrinsics(torch.from_numpy(ext))
        # bf16: the API's own forward, with torch told bf16 is supported (on CPU it would pick fp16 otherwise).
        torch.cuda.is_bf16_supported = lambda *a, **k: True
        net = (
            (lambda *a, model=model: type(model).forward(model, *a)) if opts.get("precision") == "bf16" else model.model
        )
        with torch.no_grad():
            out = net(
                torch.from_numpy(get("x")),
                ext_t,
                None if ixt is None else torch.from_numpy(ixt),
                opts.get("export_feat_layers", []),
                opts.get("infer_gs", False),
                opts.get("use_ray_pose", False),
                opts.get("ref_view_strategy", "saddle_balanced"),
            )
        fields = {k: out[k] for k in ("depth", "depth_conf", "extrinsics", "intrinsics", "sky") if k in out}
        fields.update({k: v for k, v in out.get("aux", {}).items()})
        if "gaussians" in out:
            g = out["gaussians"]
            fields.update(
                {f"gs_{n}": getattr(g, n)[0] for n in ("means", "scales", "rotations", "harmonics", "opacities")}
            )
        if "scale_factor" in out:
            fields["scale_factor"] = torch.tensor(out["scale_factor"])
    else:
        images = [get(f"img_{i}") for i in range(opts["n_images"])]
        pred = model.inference(
            images,
            extrinsics=get("extrinsics"),
            intrinsics=get("intrinsics"),
            align_to_input_ext_scale=opts.get("align_to_input_ext_scale", True),
            process_res=opts.get("process_res", 504),
            process_res_method=opts.get("process_res_method", "upper_bound_resize"),
            ref_view_strategy=opts.get("ref_view_strategy", "saddle_balanced"),
        )
        fields = {
            k: getattr(pred, k)
            for k in ("depth", "conf", "extrinsics", "intrinsics", "processed_images")
            if getattr(pred, k) is not None
        }
    fields.update(captured)
    for key, value in fields.items():
        value = value.float().numpy() if torch.is_tensor(value) else np.asarray(value)
        result[f"{name}/{key}"] = value
np.savez(sys.argv[3], **result)
