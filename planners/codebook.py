"""Top-K vector-quantisation codebook shared by BeamVQ and SFP.

For every spatial position of a channels-first latent grid ``z`` (B, D, H, W) the codebook returns the K
nearest codes by squared L2 distance, ranked nearest first, together with straight-through quantised
tensors: decoding rank k gives the k-th "variant" of the latent that the planners search over.

Two fixes over the public BeamVQ/SFP ``VectorQuantizerEMA``:

* channels-last <-> channels-first conversions use ``permute`` only; the public code ``reshape``s the
  channels-last top-K latents into (B, T, C, H, W), which scrambles the layout;
* the EMA update uses the rank-1 (nearest) assignment only; the public code accumulates the rank-K one-hot,
  so it moves the K-th nearest code towards the data instead of the nearest one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthcast.errors import ConfigError


@dataclass
class CodebookOutput:
    """What :meth:`TopKCodebook.forward` returns.

    Attributes:
        indices: (B, K, H, W) int64 code ids, nearest first along K.
        distances: (B, K, H, W) float32 squared L2 distances ||z - e||^2, ascending along K.
        quantized: (B, K, D, H, W) in z's dtype, straight-through ``z + (code - z).detach()`` per rank: its
            value is the code, its gradient with respect to z is the identity.
        loss: scalar float32, ``commitment * mean((z - sg(code_1))^2)``, plus ``mean((sg(z) - code_1)^2)``
            when the codebook is trained by gradient (``ema=False``); means over all B*D*H*W elements.
        perplexity: scalar float32, ``exp(entropy)`` of the rank-1 code usage over the batch's positions
            (1 when every position picks the same code, n when usage is uniform over n codes).
        dead_codes: number of codes whose ``unused_steps`` counter is >= ``dead_after`` after this call's
            counter update; in training mode these are exactly the codes restarted in this call (their
            counters are then reset to 0). In eval mode nothing is updated and it is the current count.
    """

    indices: Tensor
    distances: Tensor
    quantized: Tensor
    loss: Tensor
    perplexity: Tensor
    dead_codes: int


def _check_k(k: int, num_codes: int) -> None:
    if not 1 <= k <= num_codes:
        raise ConfigError(
            f"k={k} nearest codes were requested from a codebook of num_codes={num_codes}; "
            f"pass 1 <= k <= {num_codes}, or build the codebook with num_codes >= {k}."
        )


class TopKCodebook(nn.Module):
    """A codebook of ``num_codes`` vectors of size ``dim`` returning the K nearest codes per position.

    Storage:
        * ``embedding`` (num_codes, dim): a buffer in EMA mode (the optimiser never touches it), an
          ``nn.Parameter`` trained by the codebook loss term when ``ema=False``.
        * ``cluster_size`` (num_codes,) and ``embed_sum`` (num_codes, dim), EMA mode only: exponential moving
          averages of the rank-1 counts and of the sums of the vectors assigned to each code. They start as
          one pseudo-observation at the initial code (``cluster_size = 1``, ``embed_sum = embedding``).
        * ``unused_steps`` (num_codes,) int64: consecutive training updates without rank-1 usage.

    EMA update (training mode only, rank-1 assignment only; VQ-VAE-2 / Sonnet ``VectorQuantizerEMA``)::

        cluster_size <- decay * cluster_size + (1 - decay) * counts
        embed_sum    <- decay * embed_sum    + (1 - decay) * sum of z assigned to each code
        n = sum(cluster_size);  smoothed = (cluster_size + eps) / (n + num_codes * eps) * n
        embedding[c] <- embed_sum[c] / smoothed[c]     for codes c used as rank 1 in this batch

    Rows of codes unused in the batch keep their vector (their statistics still decay; the unsmoothed mean
    embed_sum / cluster_size is unchanged by a pure decay), so one update moves only the codes that data
    was assigned to.

    Dead-code restart (training mode, both modes): codes with ``unused_steps >= dead_after`` after the
    counter update are re-initialised from encoder vectors of the current batch, drawn without replacement
    (with replacement if the batch has fewer positions than dead codes) by a ``torch.Generator`` seeded with
    ``seed`` and kept on the module. Their EMA statistics become one observation of the new vector
    (``cluster_size = 1``, ``embed_sum = vector``) and their counters are reset to 0. The generator state is
    not part of ``state_dict``, so a resumed run draws a different (still deterministic) sequence. With
    ``ema=False`` an optimiser's moment estimates for a restarted row are not reset.

    Rank-1 counts are not all-reduced across data-parallel processes: each process updates from its own
    batch.
    """

    embedding: Tensor
    cluster_size: Tensor
    embed_sum: Tensor
    unused_steps: Tensor

    def __init__(
        self,
        num_codes: int = 1024,
        dim: int = 64,
        k: int = 10,
        *,
        ema: bool = True,
        decay: float = 0.99,
        eps: float = 1e-5,
        commitment: float = 0.25,
        dead_after: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ConfigError(f"num_codes={num_codes} and dim={dim} must both be >= 1; pass positive sizes.")
        _check_k(k, num_codes)
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"decay={decay} must lie in [0, 1); 0.99 is the usual EMA decay.")
        if dead_after < 1:
            raise ConfigError(f"dead_after={dead_after} must be >= 1 training updates; 100 is the default.")
        self.num_codes, self.dim, self.k = num_codes, dim, k
        self.ema, self.decay, self.eps = ema, decay, eps
        self.commitment, self.dead_after = commitment, dead_after
        self.generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / num_codes
        init = torch.empty(num_codes, dim).uniform_(-bound, bound, generator=self.generator)
        if ema:
            self.register_buffer("embedding", init)
            self.register_buffer("cluster_size", torch.ones(num_codes))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, dim={self.dim}, k={self.k}, ema={self.ema}"

    def lookup(self, indices: Tensor) -> Tensor:
        """Codes for ids: (B, K, H, W) int64 -> (B, K, D, H, W) in the embedding's dtype."""
        if indices.ndim != 4:
            raise ConfigError(f"indices must be (B, K, H, W); got shape {tuple(indices.shape)}.")
        return F.embedding(indices, self.embedding).permute(0, 1, 4, 2, 3)

    def forward(self, z: Tensor, k: int | None = None) -> CodebookOutput:
        """Quantise z (B, D, H, W) channels-first to its ``k`` (default ``self.k``) nearest codes.

        In training mode this also applies the EMA update (``ema=True``) and the dead-code restart; the
        returned indices, distances and quantized tensors refer to the codebook *before* those updates.
        Distances and the loss are computed in float32 whatever z's dtype.
        """
        k = self.k if k is None else k
        _check_k(k, self.num_codes)
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ConfigError(
                f"z must be (B, D={self.dim}, H, W) channels-first; got shape {tuple(z.shape)}. "
                f"Project the encoder output to {self.dim} channels or build the codebook with that dim."
            )
        b, _, h, w = z.shape
        z_last = z.permute(0, 2, 3, 1)  # (B, H, W, D)
        flat = z_last.reshape(-1, self.dim).detach().float()  # (N, D); merges B, H, W only
        codes = self.embedding.detach().float()  # (L, D)

        # Full distance matrix by expansion (cheap), then exact distances recomputed for the K selected codes.
        approx = (
            flat.square().sum(1, keepdim=True) - 2.0 * flat @ codes.T + codes.square().sum(1)
        ).clamp_min(0)
        top = torch.topk(approx, k, dim=1, largest=False).indices  # (N, K)
        exact = (flat[:, None, :] - codes[top]).square().sum(-1)  # (N, K)
        dist, order = torch.sort(exact, dim=1)
        idx = torch.gather(top, 1, order)  # (N, K) nearest first

        indices = idx.reshape(b, h, w, k).permute(0, 3, 1, 2)  # (B, K, H, W)
        distances = dist.reshape(b, h, w, k).permute(0, 3, 1, 2)
        chosen = F.embedding(indices, self.embedding).permute(0, 1, 4, 2, 3)  # (B, K, D, H, W)
        z_k = z.unsqueeze(1)
        quantized = z_k + (chosen.to(z.dtype) - z_k).detach()

        code_1 = chosen[:, 0].float()  # (B, D, H, W); carries the codebook gradient when ema=False
        z32 = z.float()
        loss = self.commitment * F.mse_loss(z32, code_1.detach())
        if not self.ema:
            loss = loss + F.mse_loss(z32.detach(), code_1)

        counts = torch.bincount(idx[:, 0], minlength=self.num_codes).float()  # (L,)
        probs = counts / counts.sum()
        perplexity = torch.exp(-torch.special.xlogy(probs, probs).sum())

        if self.training:
            with torch.no_grad():
                if self.ema:
                    self._ema_update(flat, idx[:, 0], counts)
                dead_codes = self._restart_dead(flat, counts)
        else:
            dead_codes = int((self.unused_steps >= self.dead_after).sum())
        return CodebookOutput(indices, distances, quantized, loss, perplexity, dead_codes)

    def _ema_update(self, flat: Tensor, nearest: Tensor, counts: Tensor) -> None:
        """EMA step from the rank-1 assignment. flat (N, D) float32, nearest (N,) int64, counts (L,)."""
        one_hot = F.one_hot(nearest, self.num_codes).float()  # (N, L)
        size = self.cluster_size.float() * self.decay + (1.0 - self.decay) * counts
        sums = self.embed_sum.float() * self.decay + (1.0 - self.decay) * (one_hot.T @ flat)
        n = size.sum()
        smoothed = (size + self.eps) / (n + self.num_codes * self.eps) * n
        used = counts > 0
        self.cluster_size.copy_(size)
        self.embed_sum.copy_(sums)
        self.embedding[used] = (sums[used] / smoothed[used, None]).to(self.embedding.dtype)

    def _restart_dead(self, flat: Tensor, counts: Tensor) -> int:
        """Advance the unused counters and restart dead codes from rows of flat (N, D); returns their count."""
        self.unused_steps.copy_(torch.where(counts > 0, 0, self.unused_steps + 1))
        dead = (self.unused_steps >= self.dead_after).nonzero().squeeze(1)
        n_dead = dead.numel()
        if n_dead == 0:
            return 0
        n = flat.shape[0]
        if n_dead <= n:
            pick = torch.randperm(n, generator=self.generator)[:n_dead]
        else:
            pick = torch.randint(n, (n_dead,), generator=self.generator)
        fresh = flat[pick.to(flat.device)]  # (n_dead, D)
        self.embedding[dead] = fresh.to(self.embedding.dtype)
        if self.ema:
            self.cluster_size[dead] = 1.0
            self.embed_sum[dead] = fresh.to(self.embed_sum.dtype)
        self.unused_steps[dead] = 0
        return n_dead
