"""Weight-only quantisation: the block matrices stored as 8-bit or 4-bit integers.

Decoding one token reads every weight once, so on a CPU its speed is set by the bytes read, not
by the arithmetic. Storing a weight in 8 bits instead of 32 reads a quarter of the bytes; 4 bits,
an eighth (plus the scales). Activations stay in floating point ("weight-only").

    int8, per output channel:  w[o, i] ~ scale[o] * q[o, i],        q in -127 .. 127
    int4, in groups of g:      w[o, i] ~ scale[o, j] * (q[o, i] - 8) + zero[o, j],
                               q in 0 .. 15, j = i // g (g consecutive inputs share a scale)

Both are symmetric (absmax) from float weights: scale = max |w| / 127 (or / 7) over the row (or
the group), q = round(w / scale), so |w - w_quantised| <= scale / 2; a zero row gets scale 1.
The int4 zero point is 0 then; it is there for GGUF's Q4_1 blocks, w = d q + m, which are this
layout with scale d and zero m + 8 d, and load without rounding again (llm/gguf_format.py). A
group of 32..128 keeps an outlier from spoiling a whole row's scale; a matrix whose in_features
is not a multiple of the group is stored in int8 instead (no padding).

Each layer has two paths, chosen by `fast`: the reference, which dequantises the weight and
multiplies in the input's dtype (plain tensor ops: the definition), and PyTorch's packed low-bit
CPU kernels (torch._weight_int8pack_mm, torch._weight_int4pack_mm_for_cpu), which read the small
integers directly, 3-8x faster than a float32 matmul per layer here. They compute in bfloat16
(given float32 input they are slower than the float32 matmul: no fast path for it;
kernel/benchmarking_quantize.py), so the fast path casts the input to bfloat16 and back; the
tests check it against the reference, which is slower still (it writes a float matrix per
call). The output layer, when quantised (head=True), is int8 whatever the kind: it is the most
sensitive matrix (llama.cpp's 4-bit files keep it at 6 or 8 bits).
Embeddings stay in floating point: a token reads one row of them, not the whole table.

    uv run -m llm.generating --pretrained smollm2-135m --quantize int4 --quantize_head
    uv run -m llm.export smollm2-135m smollm2-int4.pt --quantize int4 --quantize_head
    uv run -m llm.generating --checkpoint smollm2-int4.pt --prompt "Once upon a time"
"""

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from llm.checkpoint import atomic_save, model_config_of, restore_checkpoint
from llm.config import config_to_dict
from llm.transformer import Linear, Transformer, no_weight_init

KINDS = ("int8", "int4")
GROUP_SIZES = (32, 64, 128)  # int4 groups the packed kernel takes
QMAX = {"int8": 127, "int4": 7}  # symmetric: q = round(w / scale), |q| <= QMAX
INT4_OFFSET = 8  # int4 q is stored unsigned, 0 .. 15: q - 8 is the signed value
# The packed kernels exist on CPU in this PyTorch (2.5 and later).
HAS_KERNELS = hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu") and hasattr(
    torch.ops.aten, "_weight_int8pack_mm"
)


@dataclass(frozen=True)
class Quantization:
    """How a model's matrices are quantised (saved in a quantised checkpoint)."""

    kind: str  # "int8" (per output channel) or "int4" (in groups)
    group_size: int = 32  # int4: consecutive input weights sharing a scale and zero
    head: bool = False  # also the output layer (in int8 whatever the kind)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"quantize must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.kind == "int4" and self.group_size not in GROUP_SIZES:
            raise ValueError(
                f"group_size must be one of {', '.join(map(str, GROUP_SIZES))} for int4, "
                f"not {self.group_size}"
            )


@dataclass(kw_only=True)
class QuantizeOptions:
    """The quantisation flags of every command that loads a model to run it (generating,
    evaluate, serving): a base class of its config. Call quantization() in __post_init__ to
    check them."""

    quantize: str = ""  # "int8" or "int4": weight-only quantised matrices (llm/quantize.py)
    group_size: int = 32  # --quantize int4: input weights sharing one scale (32, 64 or 128)
    quantize_head: bool = False  # --quantize: the output layer too (always in int8)

    def quantization(self) -> Quantization | None:
        """The flags as a Quantization for llm/loading.py's load; None when --quantize is not
        given. Bad values: a ValueError."""
        if not self.quantize:
            return None
        return Quantization(self.quantize, self.group_size, self.quantize_head)


# ---------------------------------------------------------------------------------------------
# Quantise and dequantise a matrix (out_features, in_features)
# ---------------------------------------------------------------------------------------------


def absmax_scale(w: Tensor, qmax: int) -> Tensor:
    """max |w| / qmax over the last dim, in float32; 1 where all are 0 (any scale is exact)."""
    scale = w.float().abs().amax(dim=-1) / qmax
    return torch.where(scale == 0, 1.0, scale)


def quantize_int8(w: Tensor) -> tuple[Tensor, Tensor]:
    """w (out, in) -> q int8 (out, in), scale float32 (out,): w ~ scale[:, None] * q."""
    scale = absmax_scale(w, QMAX["int8"])
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: Tensor, scale: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    return (q.to(dtype) * scale[:, None].to(dtype)).to(dtype)


def quantize_int4(w: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """w (out, in) -> q uint8 in 0 .. 15 (out, in), scale and zero float32 (out, in / group):
    w ~ scale * (q - 8) + zero per group, symmetric (zero = 0)."""
    out_features, in_features = w.shape
    if in_features % group_size:
        raise ValueError(
            f"int4 group_size {group_size} does not divide in_features {in_features}; "
            f"pick one of {', '.join(map(str, GROUP_SIZES))} that does"
        )
    groups = w.float().reshape(out_features, -1, group_size)  # (out, in / g, g)
    scale = absmax_scale(groups, QMAX["int4"])  # (out, in / g)
    q = torch.round(groups / scale[..., None]).clamp(-8, 7) + INT4_OFFSET
    return q.to(torch.uint8).reshape(w.shape), scale, torch.zeros_like(scale)


def dequantize_int4(
    q: Tensor, scale: Tensor, zero: Tensor, dtype: torch.dtype = torch.float32
) -> Tensor:
    """scale * (q - 8) + zero, each group of q's rows (q: (out, in), scale: (out, in / g))."""
    groups = q.reshape(*scale.shape, -1).float() - INT4_OFFSET  # (out, in / g, g)
    return (groups * scale[..., None] + zero[..., None]).reshape(q.shape).to(dtype)


def pack_int4(q: Tensor) -> Tensor:
    """(out, in) values 0 .. 15 -> (out, in / 2) uint8, two per byte: even columns in the low
    nibble. Our storage format (portable; the kernel's own packing is made from it)."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)


def unpack_int4(packed: Tensor) -> Tensor:
    """The inverse of pack_int4: (out, in / 2) uint8 -> (out, in) uint8 in 0 .. 15."""
    return torch.stack([packed & 15, packed >> 4], dim=-1).flatten(-2)


# ---------------------------------------------------------------------------------------------
# Quantised linear layers
# ---------------------------------------------------------------------------------------------


class QuantizedLinear(nn.Module):
    """y = x W^T with W stored quantised. `fast`: PyTorch's packed CPU kernel (bfloat16 inside),
    else the reference: dequantise W to x's dtype, then multiply."""

    kind = ""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.fast = HAS_KERNELS
        # The kernels' forms of the weights are not saved: remade after every load.
        self.register_load_state_dict_post_hook(lambda module, _: module.prepare())

    def forward(self, x: Tensor) -> Tensor:  # (..., in) -> (..., out)
        if self.fast and x.device.type == "cpu":
            flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
            return self.kernel(flat).to(x.dtype).reshape(*x.shape[:-1], self.out_features)
        return x @ self.dequantize(x.dtype).T

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        raise NotImplementedError

    def kernel(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def prepare(self) -> None:
        """Make the kernel's form of the weights from the stored ones."""

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.kind}"


class Int8Linear(QuantizedLinear):
    """Int8 weights with one scale per output channel (row)."""

    kind = "int8"

    def __init__(self, q: Tensor, scale: Tensor) -> None:
        super().__init__(q.shape[1], q.shape[0])
        self.register_buffer("weight_q", q)  # (out, in) int8
        self.register_buffer("scale", scale)  # (out,) float32
        self.prepare()

    @classmethod
    def from_float(cls, weight: Tensor) -> "Int8Linear":
        return cls(*quantize_int8(weight.detach()))

    @classmethod
    def empty(cls, in_features: int, out_features: int) -> "Int8Linear":
        """Zeros of the right shapes, for a checkpoint to fill."""
        return cls(torch.zeros(out_features, in_features, dtype=torch.int8),
                   torch.ones(out_features))  # fmt: skip

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize_int8(self.weight_q, self.scale, dtype)

    def prepare(self) -> None:
        self.register_buffer("kernel_scale", self.scale.to(torch.bfloat16), persistent=False)

    def kernel(self, x: Tensor) -> Tensor:  # (n, in) bfloat16 -> (n, out)
        return torch._weight_int8pack_mm(x, self.weight_q, self.kernel_scale)


class Int4Linear(QuantizedLinear):
    """Int4 weights (two per byte) with a scale and a zero point per group of inputs."""

    kind = "int4"

    def __init__(self, q: Tensor, scale: Tensor, zero: Tensor) -> None:
        """q: (out, in) uint8 values 0 .. 15; scale, zero: (out, in / group_size)."""
        super().__init__(q.shape[1], q.shape[0])
        self.group_size = q.shape[1] // scale.shape[1]
        self.register_buffer("weight_q", pack_int4(q))  # (out, in / 2) uint8
        self.register_buffer("scale", scale.float())
        self.register_buffer("zero", zero.float())
        self.prepare()

    @classmethod
    def from_float(cls, weight: Tensor, group_size: int) -> "Int4Linear":
        return cls(*quantize_int4(weight.detach(), group_size))

    @classmethod
    def empty(cls, in_features: int, out_features: int, group_size: int) -> "Int4Linear":
        groups = torch.ones(out_features, in_features // group_size)
        q = torch.zeros(out_features, in_features, dtype=torch.uint8)
        return cls(q, groups, torch.zeros_like(groups))

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize_int4(unpack_int4(self.weight_q), self.scale, self.zero, dtype)

    def prepare(self) -> None:
        """The kernel's packing of q (its own tiled layout) and its (in / g, out, 2) bfloat16
        scales and zeros. Shapes the kernel does not take keep to the reference path."""
        if not self.fast or self.weight_q.device.type != "cpu":
            return
        q = unpack_int4(self.weight_q).to(torch.int32)
        try:
            packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        except RuntimeError:
            self.fast = False
            return
        scale_zero = torch.stack([self.scale.T, self.zero.T], dim=-1).to(torch.bfloat16)
        self.register_buffer("kernel_q", packed, persistent=False)
        self.register_buffer("kernel_scale_zero", scale_zero.contiguous(), persistent=False)

    def kernel(self, x: Tensor) -> Tensor:  # (n, in) bfloat16 -> (n, out)
        return torch._weight_int4pack_mm_for_cpu(
            x, self.kernel_q, self.group_size, self.kernel_scale_zero
        )


def quantized_linear(
    weight: Tensor, spec: Quantization, head: bool = False, empty: bool = False
) -> QuantizedLinear:
    """The quantised layer for a float weight (out, in), the output layer (head) always int8, and
    so is an int4 matrix whose rows the group does not divide (e.g. d_ff 688 in groups of 32), as
    llama.cpp falls back to another type for such rows; empty: zeros of the layer's shapes
    instead, for a checkpoint to fill."""
    out_features, in_features = weight.shape
    if spec.kind == "int8" or head or in_features % spec.group_size:
        if empty:
            return Int8Linear.empty(in_features, out_features)
        return Int8Linear.from_float(weight)
    if empty:
        return Int4Linear.empty(in_features, out_features, spec.group_size)
    return Int4Linear.from_float(weight, spec.group_size)


# ---------------------------------------------------------------------------------------------
# Whole models
# ---------------------------------------------------------------------------------------------


def quantized_names(model: Transformer, spec: Quantization) -> list[str]:
    """The names of the Linear layers `spec` quantises: every block matrix (attention's qkv and
    out projections, the FFN's), and lm_head when spec.head."""
    return [name for name, module in model.named_modules()
            if isinstance(module, Linear) and (name != "lm_head" or spec.head)]  # fmt: skip


def quantize_model(
    model: Transformer,
    spec: Quantization,
    layers: dict[str, QuantizedLinear] | None = None,
    empty: bool = False,
) -> Transformer:
    """Replace model's Linear layers (quantized_names) with quantised ones, in place; returns the
    model. `layers`: ready-made quantised layers by name (e.g. from a GGUF file's own blocks);
    the rest are quantised from their float weights, or, with empty=True, left as zeros for a
    checkpoint to fill. The model must be in eval mode: quantised layers do not train."""
    if model.training:
        raise ValueError("quantize a model for inference only: call model.eval() first "
                         "(quantised layers cannot be trained)")  # fmt: skip
    layers = layers or {}
    names = quantized_names(model, spec)
    inputs = {model.get_submodule(n).weight.shape[1] for n in names if n != "lm_head"}
    if spec.kind == "int4" and all(n % spec.group_size for n in inputs):
        raise ValueError(f"int4 groups of {spec.group_size} divide none of this model's matrix "
                         f"inputs ({', '.join(map(str, sorted(inputs)))}): choose a smaller "
                         "group_size, or int8")  # fmt: skip
    for name in names:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, attribute)
        out_features, in_features = linear.weight.shape
        if name in layers:
            new = layers[name]
            if (new.out_features, new.in_features) != (out_features, in_features):
                got = f"{new.out_features} x {new.in_features}"
                raise ValueError(f"{name}: a {got} quantised layer for {out_features} x "
                                 f"{in_features} weights")  # fmt: skip
        else:  # (a matrix the int4 groups do not divide is int8: quantized_linear cannot fail)
            new = quantized_linear(linear.weight, spec, name == "lm_head", empty)
        setattr(parent, attribute, new.to(linear.weight.device))
    model.quantization = spec
    return model


def save_quantized(model: Transformer, path, info: dict) -> None:
    """Write a quantised model as a checkpoint of its own kind: the state dict (integers,
    scales, the float embeddings and norms), its config, the quantisation, and the tokenizer and
    chat details of `info` (as llm/loading.py's load gives them). llm/loading.py loads it."""
    spec = getattr(model, "quantization", None)
    if spec is None:
        raise ValueError("the model is not quantised: quantize_model it first")
    keep = ("tokenizer_dir", "eos_token_id", "bos_token_id", "chat_template", "name")
    checkpoint = {
        "model": model.state_dict(),
        "model_config": config_to_dict(model.config),
        "quantization": dataclasses.asdict(spec),
        "iteration": info.get("iteration") or 0,  # the source's training steps, if any
        "train_config": info.get("train_config"),
        **{key: info.get(key) for key in keep},
    }
    atomic_save(checkpoint, path)


def load_quantized(checkpoint: dict, path, device, dtype: torch.dtype) -> Transformer:
    """The model of a quantised checkpoint (read_checkpoint's dict), bit for bit as saved when
    `dtype` is the dtype it was saved in (its embeddings and norms are cast to `dtype`)."""
    with no_weight_init():
        model = Transformer(model_config_of(checkpoint, path), dtype=dtype).eval()
    try:
        spec = Quantization(**checkpoint["quantization"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: its quantization entry does not fit this code: {e}") from None
    quantize_model(model, spec, empty=True)
    restore_checkpoint(checkpoint, model)
    return model.to(device)
