"""Train methods: LoRA, DoRA, IA3, prompt tuning, prefix tuning, QLoRA (4-bit, 8-bit) and full fine-tuning.

Each registers a ``TrainMethod`` with a pydantic ``Params`` holding the reference study's defaults
(LoRA r=16, alpha=32, dropout 0.05; 20 virtual tokens for prompt tuning, 10 for prefix tuning;
learning rates LoRA 3e-4, IA3 3e-3, prompt tuning 3e-3, prefix tuning 3e-2, full 5e-5). A method
knows how to wrap a loaded model for training (``wrap``) through ``peft``; target modules come from
the model's own linear layers (``codepeft.models.find_target_modules``), so any causal or seq2seq
transformers model works.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from codepeft.errors import CodepeftError, first_line
from codepeft.methods.base import Method, MethodParams, register_method

TargetRole = Literal["attention", "mlp", "all-linear"]


class TrainParams(MethodParams):
    """Hyperparameters every train method has."""

    lr: float = Field(3e-4, gt=0, description="peak learning rate (linear warmup, then linear decay)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="fraction of the steps spent warming up")


class LoraParams(TrainParams):
    r: int = Field(16, gt=0, description="rank of the update matrices")
    alpha: float = Field(32, gt=0, description="scaling numerator (update scaled by alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: TargetRole | list[str] = Field(
        "all-linear", description="attention | mlp | all-linear, or a list of module names"
    )


class QLoraParams(LoraParams):
    upcast: bool | None = Field(
        None,
        description="cast the base's unquantized weights (embeddings, norms) to fp32 as peft's "
        "prepare_model_for_kbit_training does (the QLoRA recipe; it guards fp16's narrow range); None "
        "(default): only on an fp16 base, so a bf16 base computes in bf16 as LoRA's does (QLoRA 8-bit 1.8x "
        "faster on CPU, less activation memory; benchmarks/README.md)",
    )


class IA3Params(TrainParams):
    lr: float = Field(3e-3, gt=0)
    targets: Literal["attention+feedforward", "attention", "mlp", "all-linear"] | list[str] = Field(
        "attention+feedforward", description="the IA3 paper's keys, values and feed-forward output, or module names"
    )


class PromptTuningParams(TrainParams):
    lr: float = Field(3e-3, gt=0)
    num_virtual_tokens: int = Field(20, gt=0)
    init_text: str | None = Field(
        "Generate Python code for the following request.",
        description="text the virtual tokens start from (None: random initialisation)",
    )


class PrefixTuningParams(TrainParams):
    lr: float = Field(3e-2, gt=0)
    num_virtual_tokens: int = Field(10, gt=0)
    projection: bool = Field(False, description="reparametrise the prefix through an MLP (prefix_projection)")


class FullParams(TrainParams):
    lr: float = Field(5e-5, gt=0)


class TrainMethod(Method):
    """A method that trains weights. ``wrap`` turns a loaded base model into the model to train."""

    kind: ClassVar[Literal["prompt", "train"]] = "train"
    #: passed to ``load_model`` (QLoRA loads the base quantised)
    quantization: ClassVar[Literal["4bit", "8bit"] | None] = None
    #: virtual tokens are prepended per sequence, so several sequences cannot share one packed row
    packs: ClassVar[bool] = True
    #: the learned update can be folded into the base weights
    mergeable: ClassVar[bool] = True
    #: the adapter layers may compute in a bf16 base's dtype under autocast (fp32 weights kept as master copy)
    bf16_compute: ClassVar[bool] = False
    #: trains the base model's own weights (full fine-tuning): fp32 master weights, bf16 autocast on a bf16 base
    trains_base_weights: ClassVar[bool] = False

    def check_supported(self, loaded: Any) -> None:
        """Raise a one-line error when this method cannot train ``loaded`` (or cannot run here)."""

    def computes_in_bf16(self, loaded: Any, params: Any) -> bool:
        """Whether, with these params, the adapters may compute in a bf16 base's dtype (``bf16_compute``)."""
        return self.bf16_compute

    def peft_config(self, loaded: Any, params: Any) -> Any:
        raise NotImplementedError

    def wrap(self, loaded: Any, params: Any) -> Any:
        """The trainable model: the base wrapped by peft (or the base itself for full fine-tuning)."""
        from peft import get_peft_model

        self.check_supported(loaded)
        config = self.peft_config(loaded, params)
        try:
            return get_peft_model(loaded.model, config)
        except (ValueError, TypeError, NotImplementedError) as err:
            message = first_line(err)
            raise CodepeftError(
                f"method {self.name!r} cannot be applied to {loaded.identity.get('architecture', 'this model')} "
                f"({message}): choose another method or other targets"
            ) from None


def task_type(loaded: Any) -> str:
    return "SEQ_2_SEQ_LM" if loaded.kind == "seq2seq" else "CAUSAL_LM"


def resolve_targets(loaded: Any, targets: str | list[str]) -> list[str]:
    """Module names for a role (``attention``, ``mlp``, ``all-linear``) or an explicit list, checked."""
    if isinstance(targets, list):
        if not targets:
            raise CodepeftError("targets is empty: name at least one module or use attention|mlp|all-linear")
        names = {name.rsplit(".", 1)[-1] for name, _ in loaded.model.named_modules()}
        missing = [t for t in targets if t not in names]
        if missing:
            raise CodepeftError(
                f"target modules {missing} not found in {loaded.identity.get('architecture', 'the model')}: "
                f"use attention|mlp|all-linear or existing module names"
            )
        return list(targets)
    from codepeft.models import find_target_modules

    found = find_target_modules(loaded.model)
    role = {"attention": found.attention, "mlp": found.mlp, "all-linear": found.all_linear}.get(targets)
    if role is None:
        raise CodepeftError(f"unknown targets {targets!r}: use attention, mlp, all-linear or a list of module names")
    if not role:
        raise CodepeftError(
            f"no {targets} linear layers found in {loaded.identity.get('architecture', 'the model')}: "
            "pass target module names with --param targets=[...]"
        )
    return list(role)


@register_method
class Lora(TrainMethod):
    name = "lora"
    description = "Low-rank updates (B·A) added to the target linear layers (Hu et al., 2021)."
    Params = LoraParams
    use_dora: ClassVar[bool] = False
    bf16_compute = True

    def peft_config(self, loaded, params):
        from peft import LoraConfig

        return LoraConfig(
            task_type=task_type(loaded), r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
            target_modules=resolve_targets(loaded, params.targets), use_dora=self.use_dora, bias="none",
        )


@register_method
class Dora(Lora):
    name = "dora"
    description = "Weight-decomposed LoRA: LoRA on the direction plus a learned magnitude per output."
    use_dora = True
    # the fused DoRA layers compute in bf16 too; the weight norms and the magnitude's gradient stay fp32
    bf16_compute = True


class _QLora(Lora):
    Params = QLoraParams
    # On a bf16 base the adapters compute in bf16 like LoRA's: in fp32 (peft casts each adapted layer's
    # input to the fp32 adapter weights) the copies kept for the backward cost more memory than
    # quantizing a small model saves (benchmarks/README.md, "QLoRA's memory"). Not when `upcast` asks for fp32.
    bf16_compute = True

    def computes_in_bf16(self, loaded, params):
        return not _upcasts(params, loaded)

    def check_supported(self, loaded):
        from codepeft.models.quantization import bitsandbytes_problem

        problem = bitsandbytes_problem()
        if problem:
            raise CodepeftError(f"method {self.name!r} cannot run on this machine: {problem}")

    def wrap(self, loaded, params):
        from peft import prepare_model_for_kbit_training

        self.check_supported(loaded)
        if _upcasts(params, loaded):
            # Casts every unquantized weight to fp32 (the embeddings too, so the whole residual stream
            # computes in fp32); gradient checkpointing stays a setting of ours.
            loaded.model = prepare_model_for_kbit_training(loaded.model, use_gradient_checkpointing=False)
        _keep_4bit_weights_trainable(loaded.model)
        return super().wrap(loaded, params)


def _keep_4bit_weights_trainable(model: Any) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its CPU inference kernel while this model trains.

    bitsandbytes (0.50) repacks a ``Linear4bit``'s weight on its first eval forward without gradients
    (training's validation), and from then on no gradient flows through that layer: the adapters below
    it would learn from the residual stream alone (measured: MBPP validation loss 1.544 -> 1.540 in six
    steps, 1.549 -> 1.332 without the repacking). A model loaded for generation repacks as usual.
    """
    for module in model.modules():
        if type(module).__name__ == "Linear4bit" and hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _upcasts(params: QLoraParams, loaded) -> bool:
    """Whether the unquantized weights go to fp32: as asked, else only for an fp16 base."""
    if params.upcast is not None:
        return params.upcast
    return loaded.identity.get("dtype") == "float16"


@register_method
class QLora4bit(_QLora):
    name = "qlora-4bit"
    description = "LoRA on a base quantised to 4-bit NF4 with double quantization (bitsandbytes)."
    quantization = "4bit"

    def check_supported(self, loaded):
        super().check_supported(loaded)
        import torch

        if torch.cuda.is_available():
            return
        # bitsandbytes' CPU kernels repack weights in blocks of 64 input features
        narrow = sorted({m.in_features for m in loaded.model.modules()
                         if type(m).__name__ == "Linear4bit" and m.in_features % 64})
        if narrow:
            raise CodepeftError(
                f"method 'qlora-4bit' cannot run on this CPU for this model: bitsandbytes' CPU path needs layer "
                f"widths divisible by 64 (found {narrow}); use qlora-8bit or lora, or a GPU"
            )


@register_method
class QLora8bit(_QLora):
    name = "qlora-8bit"
    description = "LoRA on a base quantised to 8-bit (bitsandbytes LLM.int8)."
    quantization = "8bit"


@register_method
class IA3(TrainMethod):
    name = "ia3"
    description = "Learned rescaling vectors on keys, values and the feed-forward input (Liu et al., 2022)."
    Params = IA3Params

    def peft_config(self, loaded, params):
        from peft import IA3Config

        from codepeft.models import find_target_modules

        found = find_target_modules(loaded.model)
        if params.targets == "attention+feedforward":
            targets = list(found.ia3)
        else:
            targets = resolve_targets(loaded, params.targets)
        feedforward = [t for t in targets if t in set(found.feedforward)]
        if not targets:
            raise CodepeftError(
                f"no IA3 target layers found in {loaded.identity.get('architecture', 'the model')}: "
                "pass module names with --param targets=[...]"
            )
        return IA3Config(task_type=task_type(loaded), target_modules=targets, feedforward_modules=feedforward)


@register_method
class PromptTuning(TrainMethod):
    name = "prompt-tuning"
    description = "Learned virtual token embeddings prepended to every input, initialised from a text."
    Params = PromptTuningParams
    packs = False
    mergeable = False

    def peft_config(self, loaded, params):
        from peft import PromptTuningConfig, PromptTuningInit

        if params.init_text:
            # peft repeats/truncates the init text to num_virtual_tokens
            return PromptTuningConfig(
                task_type=task_type(loaded), num_virtual_tokens=params.num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=params.init_text,
                tokenizer_name_or_path=loaded.identity.get("path"),
            )
        return PromptTuningConfig(task_type=task_type(loaded), num_virtual_tokens=params.num_virtual_tokens)


@register_method
class PrefixTuning(TrainMethod):
    name = "prefix-tuning"
    description = "Learned key/value prefixes in every attention layer (Li & Liang, 2021)."
    Params = PrefixTuningParams
    packs = False
    mergeable = False

    def peft_config(self, loaded, params):
        from peft import PrefixTuningConfig

        return PrefixTuningConfig(
            task_type=task_type(loaded), num_virtual_tokens=params.num_virtual_tokens,
            prefix_projection=params.projection,
        )


@register_method
class Full(TrainMethod):
    name = "full"
    description = "Every weight of the model is trained (the costly upper reference)."
    Params = FullParams
    mergeable = False
    trains_base_weights = True

    def wrap(self, loaded, params):
        import torch

        for parameter in loaded.model.parameters():
            parameter.requires_grad_(True)
        # bf16 weights with AdamW lose small updates; train full models in fp32 under bf16 autocast.
        if next(loaded.model.parameters()).dtype != torch.float32:
            loaded.model = loaded.model.float()
        return loaded.model


def train_methods() -> dict[str, TrainMethod]:
    """Every registered train method by name."""
    from codepeft.methods.base import all_methods

    return {name: m for name, m in all_methods().items() if m.kind == "train"}  # type: ignore[misc]
