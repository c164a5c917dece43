"""Reference files for the Vision Transformer import test.

Writes, into the directory given as the only argument, three small Vision Transformers under
timm's exact state-dict names (timm.models.vision_transformer.VisionTransformer) with seeded
pseudo-random weights, each with the JSON config the Rust side builds the model from:

  vit_gelu        plain ViT: GELU MLP, class token only, pos_embed covering the class token
  vit_reg_swiglu  UNI2-h / H-optimus style: 4 registers, SwiGLU, LayerScale, pos_embed over
                  the patch grid only
  vit_reg_prefix  Virchow2 style: 2 registers inside pos_embed, SwiGLU, LayerScale, pooled as
                  class token + mean of the patch tokens

together with vit_reg_swiglu.bin (the same tensors as a torch.save zip checkpoint, written
without torch), variants of vit_reg_swiglu that the importer must refuse or report, and
expected.json: inputs at the native and at other sizes (so the position embedding is
resampled) and the eval-mode pooled embeddings, computed here in float64 numpy so that the
Rust side is checked against an implementation it shares no code with.

Exit status 3 means numpy or safetensors is missing from this interpreter.
"""

import collections
import io
import json
import math
import pickle
import sys
import time
import types
import zipfile
from pathlib import Path

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as err:
    print(f"missing Python package {err.name}", file=sys.stderr)
    sys.exit(3)

BATCH = 2
EPS = 1e-6  # timm builds its ViTs with LayerNorm(eps=1e-6)
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
# The Rust test compares at 1e-4; every mistake checked below must move the output well past it.
MIN_MARGIN = 1e-3

MODELS = {
    "vit_gelu": dict(
        patch=8, dim=32, depth=2, heads=4, mlp="gelu", mlp_hidden=64, registers=0,
        pos_embed_prefix=True, layer_scale=False, pool="class", grid=4,
    ),
    "vit_reg_swiglu": dict(
        patch=7, dim=48, depth=2, heads=3, mlp="swiglu", mlp_hidden=128, registers=4,
        pos_embed_prefix=False, layer_scale=True, pool="class", grid=4,
    ),
    "vit_reg_prefix": dict(
        patch=8, dim=32, depth=3, heads=2, mlp="swiglu", mlp_hidden=96, registers=2,
        pos_embed_prefix=True, layer_scale=True, pool="class+mean", grid=3,
    ),
}
# Input sides per model: the native one first, then ones that make the pos_embed be resampled
# (up and, for vit_gelu, down, where antialiasing matters).
SIDES = {
    "vit_gelu": (32, 48, 24),
    "vit_reg_swiglu": (28, 42),
    "vit_reg_prefix": (24, 40),
}


def config_json(cfg):
    """The config file the Rust side reads, in its exact schema."""
    vit = dict(cfg, norm_eps=EPS)
    return {
        "vit": vit,
        "preprocess": {
            "input_px": cfg["grid"] * cfg["patch"],
            "mean": MEAN,
            "std": STD,
            "mpp": 0.5,
        },
    }


def features(cfg):
    """Width of the pooled embedding."""
    return cfg["dim"] * (2 if cfg["pool"] == "class+mean" else 1)


def make_weights(rng, cfg):
    """float32 parameters, named and ordered as timm's state_dict names and orders them."""
    d, r, p, g, h = cfg["dim"], cfg["registers"], cfg["patch"], cfg["grid"], cfg["mlp_hidden"]
    w = {}

    def linear(name, out, inp):
        # 1/sqrt(fan_in) keeps activations of order one; small biases as trained models have.
        w[f"{name}.weight"] = rng.normal(0.0, 1.0 / np.sqrt(inp), (out, inp))
        w[f"{name}.bias"] = rng.normal(0.0, 0.02, out)

    def norm(name):
        w[f"{name}.weight"] = rng.uniform(0.8, 1.2, d)
        w[f"{name}.bias"] = rng.normal(0.0, 0.05, d)

    def gamma(name):
        # Small as in real models, but large enough that dropping it shows in the output.
        w[f"{name}.gamma"] = rng.uniform(0.05, 0.3, d)

    w["cls_token"] = rng.normal(0.0, 0.5, (1, 1, d))
    if r > 0:
        w["reg_token"] = rng.normal(0.0, 0.5, (1, r, d))
    prefix = 1 + r if cfg["pos_embed_prefix"] else 0
    w["pos_embed"] = rng.normal(0.0, 0.5, (1, g * g + prefix, d))
    fan_in = 3 * p * p
    w["patch_embed.proj.weight"] = rng.normal(0.0, 1.0 / np.sqrt(fan_in), (d, 3, p, p))
    w["patch_embed.proj.bias"] = rng.normal(0.0, 0.02, d)
    for i in range(cfg["depth"]):
        b = f"blocks.{i}"
        norm(f"{b}.norm1")
        linear(f"{b}.attn.qkv", 3 * d, d)
        linear(f"{b}.attn.proj", d, d)
        if cfg["layer_scale"]:
            gamma(f"{b}.ls1")
        norm(f"{b}.norm2")
        linear(f"{b}.mlp.fc1", h, d)
        # SwiGLU's fc2 reads the gated half of fc1's output.
        linear(f"{b}.mlp.fc2", d, h if cfg["mlp"] == "gelu" else h // 2)
        if cfg["layer_scale"]:
            gamma(f"{b}.ls2")
    norm("norm")
    return {k: v.astype(np.float32) for k, v in w.items()}


def cubic_aa(x, a=-0.5):
    """The cubic filter of PyTorch's (and PIL's) antialiased bicubic, a = -0.5."""
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


def aa_weights(n_in, n_out):
    """[n_out, n_in] matrix of F.interpolate(bicubic, antialias=True, align_corners=False)."""
    scale = n_in / n_out
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = scale * (i + 0.5)
        # int() truncates toward zero, as the C++ cast does.
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        for j in range(xmin, xmax):
            m[i, j] = cubic_aa((j - center + 0.5) * invscale)
        m[i] /= m[i].sum()
    assert np.allclose(m.sum(axis=1), 1.0, atol=1e-12), "resampling weights must sum to 1"
    return m


def plain_bicubic_weights(n_in, n_out):
    """[n_out, n_in] matrix of bicubic without antialias (a = -0.75, edge-clamped): a mistake."""
    a = -0.75
    c1 = lambda t: ((a + 2) * t - (a + 3)) * t * t + 1
    c2 = lambda t: ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    scale = n_in / n_out
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        real = scale * (i + 0.5) - 0.5
        base = math.floor(real)
        t = real - base
        for off, c in zip((-1, 0, 1, 2), (c2(t + 1), c1(t), c1(1 - t), c2(2 - t))):
            m[i, min(max(base + off, 0), n_in - 1)] += c
    return m


def resample_grid(grid, g_out, weights=aa_weights):
    """[G, G, D] grid resampled to [g_out, g_out, D], rows then columns (the filter is separable)."""
    g_in = grid.shape[0]
    if g_in == g_out:
        # timm returns the embedding untouched when the size already matches.
        return grid
    m = weights(g_in, g_out)
    return np.einsum("bj,ajd->abd", m, np.einsum("ai,ijd->ajd", m, grid))


def layer_norm(x, w, b):
    """LayerNorm over the last axis with biased variance."""
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


_erf = np.vectorize(math.erf)


def gelu(x):
    """Exact (erf) GELU, torch's nn.GELU default."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def silu(x):
    """x * sigmoid(x)."""
    return x / (1.0 + np.exp(-x))


def softmax(x):
    """Softmax over the last axis."""
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def attention(w, b, x, heads, mistakes):
    """timm's Attention: fused qkv laid out as [3, heads, head_dim] along the output axis."""
    bsz, n, d = x.shape
    hd = d // heads
    qkv = x @ w(f"{b}.qkv.weight").T + w(f"{b}.qkv.bias")
    if "qkv_layout" in mistakes:
        qkv = qkv.reshape(bsz, n, heads, 3, hd).transpose(3, 0, 2, 1, 4)
    else:
        qkv = qkv.reshape(bsz, n, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    a = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd))
    out = (a @ v).transpose(0, 2, 1, 3).reshape(bsz, n, d)
    return out @ w(f"{b}.proj.weight").T + w(f"{b}.proj.bias")


def mlp(w, b, x, kind, mistakes):
    """GELU MLP, or timm's SwiGLUPacked (GluMlp, gate_last=False: the gate is the first half)."""
    h = x @ w(f"{b}.fc1.weight").T + w(f"{b}.fc1.bias")
    if kind == "gelu":
        h = gelu(h)
    else:
        x1, x2 = np.split(h, 2, axis=-1)
        if "swiglu_swapped" in mistakes:
            x1, x2 = x2, x1
        h = silu(x1) * x2
    return h @ w(f"{b}.fc2.weight").T + w(f"{b}.fc2.bias")


def forward(p, cfg, x, mistakes=frozenset()):
    """Pooled eval-mode embedding [B, features] in float64; `mistakes` names deliberate errors."""
    w = lambda name: p[name].astype(np.float64)
    bsz, _, side, _ = x.shape
    d, ps, r, big_g = cfg["dim"], cfg["patch"], cfg["registers"], cfg["grid"]
    g = side // ps
    assert g * ps == side, f"input side {side} is not a multiple of the patch {ps}"

    # Conv2d with kernel = stride = patch is a matrix product per non-overlapping patch.
    patches = x.reshape(bsz, 3, g, ps, g, ps)
    order = "bcxiyj,dcij->byxd" if "patch_order" in mistakes else "bcyixj,dcij->byxd"
    t = np.einsum(order, patches, w("patch_embed.proj.weight")) + w("patch_embed.proj.bias")
    t = t.reshape(bsz, g * g, d)

    pos = w("pos_embed")[0]
    n_prefix_pos = 1 + r if cfg["pos_embed_prefix"] else 0
    prefix_pos, grid = pos[:n_prefix_pos], pos[n_prefix_pos:].reshape(big_g, big_g, d)
    weights = plain_bicubic_weights if "no_antialias" in mistakes else aa_weights
    grid = resample_grid(grid, g, weights).reshape(g * g, d)

    prefix = [np.broadcast_to(w("cls_token"), (bsz, 1, d))]
    if r > 0 and "registers_dropped" not in mistakes:
        prefix.append(np.broadcast_to(w("reg_token"), (bsz, r, d)))
    if cfg["pos_embed_prefix"]:
        if "prefix_pos_skipped" in mistakes:
            prefix_pos = np.zeros_like(prefix_pos)
        if "registers_dropped" in mistakes:
            prefix_pos = prefix_pos[:1]
        tokens = np.concatenate(prefix + [t], axis=1) + np.concatenate([prefix_pos, grid])
    else:
        tokens = np.concatenate(prefix + [t + grid], axis=1)

    for i in range(cfg["depth"]):
        b = f"blocks.{i}"
        ls = lambda name: (
            w(f"{b}.{name}.gamma") if cfg["layer_scale"] and "no_layer_scale" not in mistakes
            else 1.0
        )
        y = layer_norm(tokens, w(f"{b}.norm1.weight"), w(f"{b}.norm1.bias"))
        tokens = tokens + ls("ls1") * attention(w, f"{b}.attn", y, cfg["heads"], mistakes)
        y = layer_norm(tokens, w(f"{b}.norm2.weight"), w(f"{b}.norm2.bias"))
        tokens = tokens + ls("ls2") * mlp(w, f"{b}.mlp", y, cfg["mlp"], mistakes)
    tokens = layer_norm(tokens, w("norm.weight"), w("norm.bias"))

    cls = tokens[:, 0]
    if cfg["pool"] == "class":
        return cls
    # Registers sit between the class token and the patches and are left out of the mean.
    first_patch = 1 if "mean_with_registers" in mistakes else tokens.shape[1] - g * g
    return np.concatenate([cls, tokens[:, first_patch:].mean(axis=1)], axis=1)


def mistakes_for(cfg, side):
    """The deliberate errors that apply to this model at this input side."""
    names = ["qkv_layout", "patch_order"]
    if cfg["mlp"] == "swiglu":
        names.append("swiglu_swapped")
    if cfg["layer_scale"]:
        names.append("no_layer_scale")
    if cfg["registers"] > 0:
        names.append("registers_dropped")
    if cfg["pos_embed_prefix"]:
        names.append("prefix_pos_skipped")
    if cfg["pool"] == "class+mean" and cfg["registers"] > 0:
        names.append("mean_with_registers")
    if side != cfg["grid"] * cfg["patch"]:
        names.append("no_antialias")
    return names


def make_input(side):
    """Two smooth, different images from a formula, so the test needs no image files."""
    b, c, h, w = np.meshgrid(
        np.arange(BATCH), np.arange(3), np.arange(side), np.arange(side), indexing="ij"
    )
    x = 0.8 * np.sin(0.37 * h * (c + 1) + 0.23 * w + 1.1 * b) + 0.2 * np.cos(0.05 * h * w)
    return x.astype(np.float32)


def check_resampling():
    """Identity at the native size, and rows summing to one for every size used here."""
    rng = np.random.default_rng(0)
    for cfg in MODELS.values():
        grid = rng.normal(size=(cfg["grid"], cfg["grid"], 5))
        # The antialiased filter itself, not only timm's shortcut, must be the identity.
        m = aa_weights(cfg["grid"], cfg["grid"])
        assert np.allclose(m, np.eye(cfg["grid"]), atol=1e-12), "native-size resample not identity"
        assert np.array_equal(resample_grid(grid, cfg["grid"]), grid)
    for n_in, n_out in [(4, 6), (4, 3), (3, 5), (4, 2), (6, 4)]:
        aa_weights(n_in, n_out)  # asserts the sums


# --- torch.save zip checkpoint, written without torch ------------------------------------------


class _Storage:
    """A tensor's storage; the pickler writes it as a persistent id, the bytes go to data/KEY."""

    def __init__(self, key, numel):
        self.key, self.numel = key, numel


def _torch_stand_ins():
    """Modules `torch` and `torch._utils` holding the two names torch's pickles refer to."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise NotImplementedError("stand-in: only pickled by reference, never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, torch._utils = FloatStorage, utils
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    return torch, utils


def _contiguous_strides(shape):
    """Row-major strides in elements."""
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


def write_torch_zip(path, tensors):
    """A torch.save-format zip of an OrderedDict state dict of float32 tensors."""
    torch, utils = _torch_stand_ins()

    class Tensor:
        def __init__(self, storage, shape):
            self.storage, self.shape = storage, shape

        def __reduce__(self):
            args = (self.storage, 0, self.shape, _contiguous_strides(self.shape), False,
                    collections.OrderedDict())
            return utils._rebuild_tensor_v2, args

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, obj.key, "cpu", obj.numel)
            return None

    # Keys are storage numbers, as torch numbers them.
    state = collections.OrderedDict(
        (name, Tensor(_Storage(str(i), arr.size), tuple(arr.shape)))
        for i, (name, arr) in enumerate(tensors.items())
    )
    buf = io.BytesIO()
    saved = {m: sys.modules.get(m) for m in ("torch", "torch._utils")}
    # The pickler finds globals through sys.modules; the stand-ins live there only meanwhile.
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        Pickler(buf, protocol=2).dump(state)
    finally:
        for m, mod in saved.items():
            if mod is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = mod

    stem = Path(path).stem
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{stem}/data.pkl", buf.getvalue())
        z.writestr(f"{stem}/byteorder", b"little")
        for i, arr in enumerate(tensors.values()):
            z.writestr(f"{stem}/data/{i}", np.ascontiguousarray(arr, dtype="<f4").tobytes())
        z.writestr(f"{stem}/version", b"3\n")


def read_torch_zip(path):
    """The state dict of a zip written by write_torch_zip, read back without torch."""
    stem = Path(path).stem
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert all(n.startswith(f"{stem}/") for n in names), names
        assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
        assert z.read(f"{stem}/byteorder") == b"little"
        assert z.read(f"{stem}/version") == b"3\n"

        def rebuild(storage, offset, shape, stride, requires_grad, hooks):
            assert offset == 0 and stride == _contiguous_strides(shape) and not requires_grad
            assert isinstance(hooks, collections.OrderedDict) and not hooks
            return storage[: int(np.prod(shape))].reshape(shape)

        class FloatStorage:
            pass

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                allowed = {
                    ("collections", "OrderedDict"): collections.OrderedDict,
                    ("torch._utils", "_rebuild_tensor_v2"): rebuild,
                    ("torch", "FloatStorage"): FloatStorage,
                }
                if (module, name) not in allowed:
                    raise pickle.UnpicklingError(f"unexpected global {module}.{name}")
                return allowed[(module, name)]

            def persistent_load(self, pid):
                tag, kind, key, location, numel = pid
                assert tag == "storage" and kind is FloatStorage and location == "cpu"
                data = np.frombuffer(z.read(f"{stem}/data/{key}"), dtype="<f4")
                assert data.size == numel
                return data

        state = Unpickler(io.BytesIO(z.read(f"{stem}/data.pkl"))).load()
        expected = {f"{stem}/{n}" for n in ("data.pkl", "byteorder", "version")}
        expected |= {f"{stem}/data/{i}" for i in range(len(state))}
        assert set(names) == expected, sorted(set(names) ^ expected)
    return state


def check_torch_zip(path, tensors):
    """Every tensor round-trips exactly, in state-dict order."""
    state = read_torch_zip(path)
    assert isinstance(state, collections.OrderedDict)
    assert list(state) == list(tensors), "state-dict order differs"
    for name, arr in tensors.items():
        back = state[name]
        assert back.dtype == np.float32 and back.shape == arr.shape, name
        assert np.array_equal(back, arr), name


# --- variants --------------------------------------------------------------------------------


def write_variants(out, rng, base, cfg):
    """Files derived from vit_reg_swiglu that the importer must refuse or report."""
    d = cfg["dim"]
    f32 = lambda a: a.astype(np.float32)

    # A qkv projection reading 8 more features than the model has.
    wrong = dict(base)
    wrong["blocks.1.attn.qkv.weight"] = f32(rng.normal(0.0, 0.1, (3 * d, d + 8)))
    save_file(wrong, str(out / "wrong_shape.safetensors"))

    # Without one LayerScale and the registers.
    missing = {k: v for k, v in base.items() if k not in ("blocks.0.ls1.gamma", "reg_token")}
    save_file(missing, str(out / "missing.safetensors"))

    # A classifier head and DINOv2's mask token beside the backbone.
    extra = dict(base)
    extra["head.weight"] = f32(rng.normal(0.0, 0.05, (10, d)))
    extra["head.bias"] = np.zeros(10, dtype=np.float32)
    extra["mask_token"] = f32(rng.normal(0.0, 0.05, (1, d)))
    save_file(extra, str(out / "extra.safetensors"))

    # A HF-transformers-style file: some other naming scheme entirely.
    save_file(
        {
            "encoder.layer.0.attention.query.weight": f32(rng.normal(0.0, 0.05, (8, 8))),
            "encoder.layer.0.attention.query.bias": np.zeros(8, dtype=np.float32),
        },
        str(out / "unrelated.safetensors"),
    )


def main():
    if len(sys.argv) != 2:
        print("usage: vit_weights.py OUT_DIR", file=sys.stderr)
        sys.exit(2)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rng = np.random.default_rng(20240917)
    check_resampling()

    cases, margins, weights = [], [], {}
    for name, cfg in MODELS.items():
        weights[name] = make_weights(rng, cfg)
        save_file(weights[name], str(out / f"{name}.safetensors"))
        (out / f"{name}.json").write_text(json.dumps(config_json(cfg), indent=2) + "\n")
        for side in SIDES[name]:
            x = make_input(side)
            emb = forward(weights[name], cfg, x.astype(np.float64))
            assert emb.shape == (BATCH, features(cfg)), (name, emb.shape)
            assert np.all(np.isfinite(emb))
            for mistake in mistakes_for(cfg, side):
                wrong = forward(weights[name], cfg, x.astype(np.float64), frozenset([mistake]))
                margin = float(np.abs(wrong - emb).max())
                assert margin > MIN_MARGIN, f"{name} at {side}px: {mistake} moves it only {margin}"
                margins.append((margin, name, side, mistake))
            cases.append(
                {
                    "model": name,
                    "input_px": side,
                    "input_shape": list(x.shape),
                    "input": [float(v) for v in x.ravel()],
                    "embedding": emb.tolist(),
                    "features": features(cfg),
                }
            )
    (out / "expected.json").write_text(json.dumps({"cases": cases}))

    bin_path = out / "vit_reg_swiglu.bin"
    write_torch_zip(bin_path, weights["vit_reg_swiglu"])
    check_torch_zip(bin_path, weights["vit_reg_swiglu"])

    write_variants(out, rng, weights["vit_reg_swiglu"], MODELS["vit_reg_swiglu"])

    margin, name, side, mistake = min(margins)
    print(
        f"smallest margin {margin:.4g} ({mistake}, {name} at {side}px) over {len(margins)} "
        f"checked mistakes; {len(cases)} cases in {time.perf_counter() - start:.2f}s"
    )


if __name__ == "__main__":
    main()
