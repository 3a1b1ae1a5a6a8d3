"""Language tasks: decoder-only Transformer LMs (Post-LN / Pre-LN, GPT-2) and a BERT masked LM.

One example is one block of ``context_length`` token positions, so ``batch.size`` counts
sequences and a step sees ``batch.size * context_length`` tokens (``units_per_example``).
Training blocks are contiguous windows of the training split; each epoch starts them at a
random offset in ``[0, context_length)`` and visits them in a random order, both drawn from the
harness's ``(seed, epoch)`` generator. The validation and test splits (``tasks.text``: random
contiguous pieces of the corpus, fixed by ``corpus.split_seed``) are each cut into windows from
offset 0, of which at most ``eval_tokens // context_length`` are evaluated, spread evenly over
the split; so every evaluation of every run sees the same tokens.

Metrics, all in nats per predicted token unless stated:

- LMs: ``val_loss`` (mean next-token cross-entropy), ``val_ppl = exp(val_loss)`` and, for the
  character-level tokeniser, ``val_bpc = val_loss / ln 2`` (bits per character);
- BERT: ``val_loss`` and ``val_acc`` are the cross-entropy and accuracy on the masked positions
  only, ``val_ppl = exp(val_loss)``; validation and test masks are drawn once from ``split_seed``
  so every evaluation scores the same positions.

``evaluate("test")`` computes the same metrics, under the same names, on the test split, and
``evaluate("train")`` on a fixed part of the training text (``train_eval``: windows from offset 0
chosen as for validation, at most ``eval_tokens`` tokens; BERT's masks drawn once, after the
validation and test masks), in evaluation mode, for the generalization gap test - train.
``chance`` is a uniform guess over the tokeniser's V tokens (:func:`uniform_chance`).

A run that trained to its end is ``stalled`` (a failure) when its final ``val_loss`` is within
``STALL_MARGIN`` nats of the unigram loss (or above it): the cross-entropy, on the very targets
validation scores, of the training split's token frequencies (add-one smoothed), recorded as
``task_info.unigram_val_loss``. That is where a stalled Post-LN run sits: it learned the character
frequencies and nothing else, though its training loss fell from ln V, so the harness's default
rule (last training loss >= 0.95 x the first) does not see it.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from bench.errors import bad
from tasks import checks
from tasks.base import Task, count_parameters
from tasks.text import Corpus, build_corpus, check_context, check_corpus_config, lm_blocks, mlm_blocks, pydoc_text, split_text

NORMS = ("post", "pre")
#: Nats above the unigram validation loss below which a run counts as having learned more than token frequencies.
#: Pilots (pydoc, character level, unigram 3.25): stalled Post-LN runs end at 3.27-3.29, learning ones below 2.7.
STALL_MARGIN = 0.1


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf  # exp overflows a float beyond ~709


def uniform_chance(vocab: int, metrics) -> dict[str, float]:
    """Scores of a uniform guess over ``vocab`` tokens, for those of ``metrics`` it defines:
    ``val_loss = ln V``, ``val_ppl = V``, ``val_bpc = log2 V``, ``val_acc = 1 / V``. An untrained
    model scores this (its validation loss is 0.99-1.01 x ln V), so it is the worth of a run that
    learned nothing; a run that learned only token frequencies (the unigram loss) scores better."""
    values = {"val_loss": math.log(vocab), "val_ppl": float(vocab), "val_bpc": math.log2(vocab), "val_acc": 1 / vocab}
    return {k: values[k] for k in metrics if k in values}


# ---------------------------------------------------------------- models


class TransformerLM(nn.Module):
    """Decoder-only Transformer LM: token + learned position embeddings, ``depth`` causal
    ``nn.TransformerEncoderLayer`` blocks (GELU MLP of ``ffn_mult * width``), tied output embedding.

    ``norm="post"``: x = LN(x + f(x)) in each sub-layer (Vaswani et al. 2017), no final LN.
    ``norm="pre"``:  x = x + f(LN(x)) and one final LN before the output (Xiong et al. 2020).
    Nothing else differs: the same seed gives identical weights for every shared parameter.

    Initialisation (GPT-2 style, no depth scaling): every Linear and attention projection weight
    and both embeddings ~ N(0, 0.02^2), biases 0, LayerNorm gain 1 and bias 0. Output: logits (B, T, V).
    """

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int, ffn_mult: int, dropout: float, norm: str):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, ffn_mult * width, dropout, activation="gelu", batch_first=True, norm_first=norm == "pre")
            for _ in range(depth)
        )
        self.norm_f = nn.LayerNorm(width) if norm == "pre" else nn.Identity()
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)
        self.apply(_init_gpt2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.drop(self.tok(x) + self.pos(torch.arange(t, device=x.device)))
        mask = self.causal[:t, :t]
        for layer in self.layers:
            h = layer(h, src_mask=mask, is_causal=True)
        return self.norm_f(h) @ self.tok.weight.T


def _init_gpt2(m: nn.Module) -> None:
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.MultiheadAttention):
        nn.init.normal_(m.in_proj_weight, 0.0, 0.02)
        nn.init.zeros_(m.in_proj_bias)


class LogitsOnly(nn.Module):
    """Wraps a transformers model so that ``module(ids)`` returns the logits tensor (B, T, V)."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf = hf_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=x).logits


# ---------------------------------------------------------------- tasks


class _TextTask(Task):
    """Shared corpus, batching and evaluation plumbing; subclasses build the model and the loss."""

    extra_tokens = 1  # tokens per block beyond context_length (the LM's last target)
    train_eval = True  # evaluate("train"): eval_tokens of the training text, fixed windows, for the generalization gap
    #: Where the model places layer norm when it is not a choice (transformers' models); None: ``task.norm`` picks.
    fixed_norm: str | None = None

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Model-size keys and the corpus/tokenizer settings shared by every language task."""
        if cls.fixed_norm is None:
            checks.choice("task.norm", cfg.norm, NORMS, f"one of {', '.join(NORMS)} (where layer norm sits)")
        elif cfg.norm != cls.fixed_norm:
            raise bad("task.norm", cfg.norm, f"{cls.fixed_norm!r} only: this model fixes where layer norm sits (the key just records it); task=lm_postln or lm_preln choose it")
        checks.int_at_least("task.context_length", cfg.context_length, 2)
        width = checks.int_at_least("task.width", cfg.width, 1)
        checks.int_at_least("task.depth", cfg.depth, 1)
        heads = checks.int_at_least("task.heads", cfg.heads, 1)
        if width % heads:
            divisors = [h for h in range(1, width + 1) if width % h == 0]
            raise bad("task.heads", heads, f"a divisor of task.width={width} (e.g. {', '.join(map(str, divisors[:8]))})")
        checks.int_at_least("task.ffn_mult", cfg.ffn_mult, 1)
        checks.number_in("task.dropout", cfg.dropout, 0, 1, "a probability in [0, 1)", high_open=True)
        checks.int_at_least("task.eval_tokens", cfg.eval_tokens, 1)  # at least one block is always evaluated
        checks.int_at_least("task.eval_batch_size", cfg.eval_batch_size, 1)
        check_corpus_config(cfg.corpus, cfg.tokenizer)

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int | None:
        """Known without tokenising for the bundled pydoc corpus at character level only (one token per character)."""
        if cfg.corpus.source != "pydoc" or cfg.tokenizer.kind != "char":
            return None
        c = cfg.corpus
        train_chars = sum(map(len, split_text(pydoc_text(), c.pieces, c.val_fraction, c.test_fraction, c.split_seed)["train"]))
        return (train_chars - cls.extra_tokens) // cfg.context_length

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        self.context = cfg.context_length
        self.corpus: Corpus = build_corpus(cfg.corpus, cfg.tokenizer, device)
        check_context(self.context, self.corpus, self.extra_tokens)
        n = len(self.corpus.train_ids) - self.extra_tokens
        self.n_train = n // self.context
        self.max_offset = min(self.context - 1, n - self.n_train * self.context)  # offsets that keep n_train blocks
        # "train": a fixed sample of the training windows (offset 0, spread over the split), the same for every run
        self.eval_blocks = {split: self._eval_windows(self.corpus.ids(split), cfg.eval_tokens) for split in ("val", "test", "train")}
        counts = torch.bincount(self.corpus.train_ids.cpu(), minlength=self.corpus.tokenizer.vocab_size).double() + 1.0
        self.unigram_nll = -(counts / counts.sum()).log()  # per token id: -log p(token) under the training frequencies

    def _unigram_loss(self, targets: torch.Tensor) -> float:
        """Mean cross-entropy of the training split's token frequencies on ``targets`` (token ids)."""
        return float(self.unigram_nll[targets.flatten().cpu()].mean())

    def is_stalled(self, first_loss: float | None, last_loss: float | None, final_metrics) -> bool:
        """The default rule, or a final validation loss within STALL_MARGIN of the unigram loss (module docstring)."""
        final = final_metrics.get("val_loss")
        near_unigram = final is not None and final >= self.unigram_val_loss - STALL_MARGIN
        return near_unigram or super().is_stalled(first_loss, last_loss, final_metrics)

    def _blocks(self, ids: torch.Tensor, offset: int) -> torch.Tensor:
        return lm_blocks(ids, self.context, offset) if self.extra_tokens else mlm_blocks(ids, self.context, offset)

    def _eval_windows(self, ids: torch.Tensor, eval_tokens: int) -> torch.Tensor:
        """``k = min(n, max(1, eval_tokens // context))`` of the split's ``n`` windows from offset 0:
        window ``i * n // k`` for ``i = 0 .. k-1``, spread evenly over all of the split's pieces."""
        windows = self._blocks(ids, 0)
        n = len(windows)
        k = min(n, max(1, eval_tokens // self.context))
        return windows[torch.arange(k, device=ids.device) * n // k]

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def train_size(self) -> int:
        return self.n_train

    def train_batches(self, batch_size: int, epoch: int, start: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        offset = int(torch.randint(0, self.max_offset + 1, (1,), generator=generator))
        perm = torch.randperm(self.n_train, generator=generator).to(self.device)
        data = self._blocks(self.corpus.train_ids, offset)[: self.n_train]
        for i in range(start, self.n_train // batch_size):
            yield data[perm[i * batch_size : (i + 1) * batch_size]]

    def units_per_example(self) -> dict[str, float]:
        return {"tokens": self.context}

    def extra_record(self) -> dict:
        return {
            **self.corpus.info,
            "context_length": self.context,
            "train_blocks": self.n_train,
            "val_blocks": len(self.eval_blocks["val"]),
            "test_blocks": len(self.eval_blocks["test"]),
            "train_eval_blocks": len(self.eval_blocks["train"]),
            "unigram_val_loss": self.unigram_val_loss,  # a run within STALL_MARGIN of it is stalled
            "norm": self.fixed_norm or self.cfg.norm,  # where layer norm sits in the model that was built (post | pre)
            "parameters": count_parameters(self.model),
        }


class TransformerLMTask(_TextTask):
    """Next-token prediction with :class:`TransformerLM` (``task.norm`` = post or pre)."""

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        self.model = self._build(cfg).to(device)
        self.unigram_val_loss = self._unigram_loss(self.eval_blocks["val"][:, 1:])  # the targets validation scores
        self.char_level = cfg.tokenizer.kind == "char"
        self.metrics = {"val_loss": "min", "val_ppl": "min", **({"val_bpc": "min"} if self.char_level else {})}
        self.chance = uniform_chance(self.corpus.tokenizer.vocab_size, self.metrics)

    def _build(self, cfg: DictConfig) -> nn.Module:
        v = self.corpus.tokenizer.vocab_size
        return TransformerLM(v, self.context, cfg.width, cfg.depth, cfg.heads, cfg.ffn_mult, cfg.dropout, cfg.norm)

    def loss(self, name: str, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        logits = model(batch[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())

    def evaluate(self, split: str = "val") -> dict[str, float]:
        self.model.eval()
        total, count = 0.0, 0
        for chunk in self.eval_blocks[split].split(self.cfg.eval_batch_size):
            logits = self.model(chunk[:, :-1]).float()
            total += F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="sum").item()
            count += chunk[:, 1:].numel()
        self.model.train()
        loss = total / count
        out = {"val_loss": loss, "val_ppl": _ppl(loss)}
        if self.char_level:
            out["val_bpc"] = loss / math.log(2)
        return out


class GPT2Task(TransformerLMTask):
    """Next-token prediction with transformers' ``GPT2LMHeadModel`` built from a small ``GPT2Config``
    (Pre-LN, GELU, tied embeddings; transformers' own initialisation, N(0, 0.02) with the GPT-2
    residual-projection scaling). No weights are downloaded."""

    fixed_norm = "pre"

    def _build(self, cfg: DictConfig) -> nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        conf = GPT2Config(
            vocab_size=self.corpus.tokenizer.vocab_size,
            n_positions=self.context,
            n_embd=cfg.width,
            n_layer=cfg.depth,
            n_head=cfg.heads,
            n_inner=cfg.ffn_mult * cfg.width,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
        )
        return LogitsOnly(GPT2LMHeadModel(conf))


def mask_tokens(ids: torch.Tensor, vocab: int, mask_id: int, prob: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking (Devlin et al. 2019): each position is chosen with probability ``prob``;
    a chosen position becomes ``mask_id`` with probability 0.8, a uniform random token in
    ``[0, vocab)`` with 0.1, and stays unchanged with 0.1.

    Returns ``(inputs, labels)`` with ``labels = ids`` at chosen positions and -100 elsewhere.
    Randomness comes from ``generator`` if given, else from torch's global RNG on ``ids.device``.
    """
    kw = {"generator": generator, "device": ids.device if generator is None else "cpu"}
    chosen = torch.rand(ids.shape, **kw).to(ids.device) < prob
    kind = torch.rand(ids.shape, **kw).to(ids.device)
    random_ids = torch.randint(0, vocab, ids.shape, **kw).to(ids.device)
    inputs = torch.where(chosen & (kind < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, inputs)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    return inputs, labels


class BertMLMTask(_TextTask):
    """Masked-LM with transformers' ``BertForMaskedLM`` from a small ``BertConfig`` (Post-LN,
    GELU, tied decoder; transformers' initialisation N(0, 0.02)). Two ids are appended to the
    tokeniser's vocabulary V: ``[MASK] = V`` and an unused padding id ``V + 1`` (BERT freezes the
    padding embedding, so it must not be a real token). Masking in training draws from torch's
    global RNG, which the harness seeds and checkpoints."""

    extra_tokens = 0
    fixed_norm = "post"

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        checks.number_in("task.mask_prob", cfg.mask_prob, 0, 1, "a probability in (0, 1); BERT uses 0.15", low_open=True, high_open=True)
        checks.int_at_least("task.split_seed", cfg.split_seed, 0)
        super().check_config(cfg)

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        p = cfg.mask_prob
        from transformers import BertConfig, BertForMaskedLM

        self.vocab = self.corpus.tokenizer.vocab_size
        self.mask_id = self.vocab
        conf = BertConfig(
            vocab_size=self.vocab + 2,
            hidden_size=cfg.width,
            num_hidden_layers=cfg.depth,
            num_attention_heads=cfg.heads,
            intermediate_size=cfg.ffn_mult * cfg.width,
            max_position_embeddings=self.context,
            type_vocab_size=1,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            pad_token_id=self.vocab + 1,
        )
        self.model = LogitsOnly(BertForMaskedLM(conf)).to(device)
        # validation masks first, then test, then the training sample's, from one stream (adding one keeps the others)
        g = torch.Generator().manual_seed(cfg.split_seed)
        self.eval_masks = {split: mask_tokens(self.eval_blocks[split], self.vocab, self.mask_id, p, generator=g) for split in ("val", "test", "train")}
        self.metrics = {"val_loss": "min", "val_acc": "max", "val_ppl": "min"}
        self.chance = uniform_chance(self.vocab, self.metrics)
        labels = self.eval_masks["val"][1]
        self.unigram_val_loss = self._unigram_loss(labels[labels != -100])  # the masked positions validation scores

    def loss(self, name: str, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
        inputs, labels = mask_tokens(batch, self.vocab, self.mask_id, self.cfg.mask_prob)
        logits = model(inputs).float()
        chosen = labels != -100
        n = chosen.sum().clamp_min(1)  # a micro-batch with no chosen position contributes 0, not NaN
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum") / n
        acc = ((logits.argmax(-1) == labels) & chosen).sum() / n
        return loss, {"masked_acc": acc}

    def evaluate(self, split: str = "val") -> dict[str, float]:
        self.model.eval()
        total, correct, count = 0.0, 0, 0
        bs = self.cfg.eval_batch_size
        inputs, labels = self.eval_masks[split]
        for x, y in zip(inputs.split(bs), labels.split(bs)):
            logits = self.model(x).float()
            total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100, reduction="sum").item()
            correct += ((logits.argmax(-1) == y) & (y != -100)).sum().item()
            count += (y != -100).sum().item()
        self.model.train()
        loss = total / count
        return {"val_loss": loss, "val_acc": correct / count, "val_ppl": _ppl(loss)}
