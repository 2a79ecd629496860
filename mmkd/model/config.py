"""Model configuration. The named sizes live in `recipes/model/<name>.yaml` (micro, tiny, dense_3b,
discrete_tiny, discrete_7b).

The dataclass defaults are the dense `tiny` size; `micro` runs tests in seconds and `dense_3b` is seed
000's 3B model (Sec. 3.2). `family: discrete` is seed 003's LaVIT-style model (docs/discrete.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmkd.model.rope import RopeScaling


@dataclass
class ModelConfig:
    name: str = "tiny"
    # dense: ViT -> projector -> decoder (seed 000). discrete: images as visual-token ids in the
    # decoder's extended vocabulary, read and generated like words (seed 003; mmkd/model/discrete.py).
    family: str = "dense"
    # Vision encoder (ViT, SigLIP-like: pre-norm, GELU MLP, learned positions, no CLS token).
    image_size: int = 48
    patch_size: int = 16
    vision_width: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    vision_mlp: int = 512
    # SigLIP's post-layernorm on the ViT output. false feeds the projector the last layer's hidden
    # state, as LLaVA does: needed to export the whole model as LlavaForConditionalGeneration.
    vision_post_norm: bool = True
    vision_norm_eps: float = 1e-5  # the towers' LayerNorms (SigLIP checkpoints state 1e-6)
    # Decoder-only language model (Llama-like: RMSNorm, RoPE, SwiGLU, grouped-query attention).
    width: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 384
    max_seq_len: int = 192
    rope_theta: float = 10000.0
    # How a pretrained decoder stretched its RoPE (linear, dynamic, llama3, yarn: mmkd/model/rope.py);
    # model.init_decoder must state the same.
    rope_scaling: RopeScaling = field(default_factory=RopeScaling)
    norm_eps: float = 1e-5
    vocab_size: int = 0  # 0: take it from the tokenizer
    tie_embeddings: bool = True
    # Attention over packed documents: sdpa (a mask), varlen (per document; flash's CPU twin),
    # flash (flash-attn 2 varlen, GPU), auto (flash when installed on a GPU, else sdpa).
    attention: str = "auto"
    # scratch: random weights, or the init_* checkpoints below. world: each tower no init_* checkpoint
    # names starts from the world foundation models, a SigLIP tower and a Llama decoder of this shape
    # trained once per world and cached (mmkd/foundations; the run sets init_vision / init_decoder to
    # them). protocol=instruct (the default) sets it for the world-sized models (docs/protocol.md).
    init: str = "scratch"
    # Local Hugging Face checkpoints (safetensors) to start from; "" = random init (mmkd/model/hf.py).
    # Their config.json sets the tower's shape keys above (mmkd/model/pretrained_shape.py).
    init_vision: str = ""  # a SigLIP vision tower
    init_decoder: str = ""  # a Llama-family decoder
    # The discrete family. Its visual tokenizer (`launch/visual_tokenizer.py`, or an adapted public
    # one): a directory, or "" to train one on the world beside the world data. Its shape is stated
    # here so the model is built (and checked) before the tokenizer exists.
    visual_tokenizer: str = ""
    codebook_size: int = 1024
    code_dim: int = 32  # seed 003 D.1: visual embeddings are |V| x 32 codes times a 32 x width projection
    visual_grid: int = 12  # codes per image side (grid^2 ids per image)
    # full: every parameter trains. lora: the new vocabulary, LoRA on the decoder's projections, the
    # norms and the LM head (seed 003 Sec. 3.2, < 8% at 7B); needs a pretrained model.init_decoder.
    tune: str = "full"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    # The objective (seed 003 E.1): L = visual_loss_scale * L_visual + L_text, each a mean over its own
    # tokens; each caption-like sample takes the image-first template with this probability (else
    # text-first); with probability mask_prob its loss covers only what follows the condition; a
    # text-first sample drops its text with probability caption_dropout (classifier-free guidance).
    visual_loss_scale: float = 0.1
    image_first_prob: float = 0.5
    mask_prob: float = 0.9
    caption_dropout: float = 0.1

    @property
    def image_tokens(self) -> int:
        """Sequence positions one image takes: its patches, or [IMG] + grid^2 visual ids + [/IMG]."""
        if self.family == "discrete":
            return self.visual_grid**2 + 2
        return (self.image_size // self.patch_size) ** 2

    def validate(self) -> ModelConfig:
        def need(cond: bool, key: str, why: str) -> None:
            if not cond:
                raise ValueError(f"model.{key}={getattr(self, key)}: {why}")

        need(
            self.image_size % self.patch_size == 0,
            "image_size",
            f"must be a multiple of patch_size={self.patch_size}",
        )
        need(self.width % self.heads == 0, "heads", f"must divide width={self.width}")
        need(
            self.heads % self.kv_heads == 0,
            "kv_heads",
            f"must divide heads={self.heads} (grouped-query attention)",
        )
        need((self.width // self.heads) % 2 == 0, "heads", "head dim must be even for RoPE")
        need(self.rope_theta > 0, "rope_theta", "must be positive")
        bad = self.rope_scaling.problems(self.max_seq_len)
        if bad:
            key, why = bad[0]
            raise ValueError(f"model.rope_scaling.{key}={getattr(self.rope_scaling, key)!r}: {why}")
        need(
            self.vision_width % self.vision_heads == 0,
            "vision_heads",
            f"must divide vision_width={self.vision_width}",
        )
        need(
            self.max_seq_len > self.image_tokens,
            "max_seq_len",
            f"must exceed image tokens ({self.image_tokens})",
        )
        need(
            self.attention in ("auto", "sdpa", "varlen", "flash"),
            "attention",
            "must be auto|sdpa|varlen|flash",
        )
        for key in ("vision_layers", "layers", "ffn", "vision_mlp"):
            need(getattr(self, key) > 0, key, "must be positive")
        need(self.family in ("dense", "discrete"), "family", "must be dense or discrete")
        need(self.init in ("scratch", "world"), "init", "must be scratch or world")
        if self.family == "discrete":
            need(
                not self.tie_embeddings,
                "tie_embeddings",
                "must be false for family=discrete: its LM head spans the extended vocabulary",
            )
            need(self.tune in ("full", "lora"), "tune", "must be full or lora")
            for key in ("codebook_size", "code_dim", "visual_grid", "lora_rank"):
                need(getattr(self, key) > 0, key, "must be positive")
            for key in ("visual_loss_scale", "lora_alpha"):
                need(getattr(self, key) >= 0, key, "must be >= 0")
            for key in ("image_first_prob", "mask_prob", "caption_dropout"):
                need(0 <= getattr(self, key) <= 1, key, "must be a probability in [0, 1]")
        return self
