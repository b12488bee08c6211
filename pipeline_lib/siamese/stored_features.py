"""Training the match adapters on stored features (``siamese.train_on: features``; ours).

With a frozen encoder (``siamese.freeze_backbone``) and only the match adapters training (``match_adapter``,
``flow_loss_weight: 0``), the network's input images matter only through the encoder's features of its match
layers, which the extract_features stage has already stored at the evaluation resolution (``image.longer_side``).
Training on those maps costs no encoder pass and teaches the adapters at the resolution the chain's layer search
and RHM (``gaur_hpf``) match at. Measured on the PF-WILLOW split (README "The full chain"): adapters trained on
128 px images lowered the searched layers' scores at 400 px; trained on the stored 400 px maps, ``gaur_hpf`` swung
between 54.1 and 69.1 PCK@0.1 with the shuffle and the epochs (``hpf`` 64.8): 42 pairs' pseudo flow is memorised;
on the category folds 61.0 (``hpf`` 65.0, the shipped chain 67.0). Opt-in, not shipped.

A pair's item: the source and target maps of the match layers (each image read once from the store and kept),
the pseudo flow on the resized source image (a ``FlowProvider`` of ``data``) and the two images' resized sizes;
grids cover exactly their image (the convention of ``kernels.dense_match``). No augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol, Sequence

import torch

from ..datasets import Pair
from .data import FlowProvider
from .loss import matching_loss


class LayerStore(Protocol):
    """What is read of a feature store (``features.FeatureStore`` / ``FeatureStores``)."""

    def get(self, image_id: str, layers: Sequence[str]) -> dict: ...

    def resized_hw(self, image_id: str) -> tuple[int, int]: ...


@dataclass(frozen=True)
class StoredPair:
    """One training pair on stored maps: {layer: (1, C, h, w)} of each image, the flow (1, H, W, 2) px and mask
    (1, H, W) on the resized source image (H x W = ``src_hw``), the resized target size ``trg_hw``."""

    pair_id: str
    src: dict[str, torch.Tensor]
    trg: dict[str, torch.Tensor]
    flow: torch.Tensor
    mask: torch.Tensor
    src_hw: tuple[int, int]
    trg_hw: tuple[int, int]


class StoredPairData:
    """The training pairs of ``pairs`` on the maps of ``layers`` in ``store`` (each image read once)."""

    def __init__(self, store: LayerStore, pairs: Sequence[Pair], layers: Sequence[str], flow_for: FlowProvider):
        if not pairs:
            raise ValueError("StoredPairData: no training pairs")
        self.store, self.pairs, self.layers, self.flow_for = store, list(pairs), tuple(layers), flow_for
        self._maps: dict[str, dict[str, torch.Tensor]] = {}
        self._flows: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.pairs)

    def maps(self, image_id: str) -> dict[str, torch.Tensor]:
        if image_id not in self._maps:
            self._maps[image_id] = {n: torch.from_numpy(a)[None] for n, a in self.store.get(image_id, self.layers).items()}
        return self._maps[image_id]

    def __getitem__(self, i: int) -> StoredPair:
        pair = self.pairs[i]
        src_hw, trg_hw = tuple(self.store.resized_hw(pair.src)), tuple(self.store.resized_hw(pair.trg))
        if pair.pair_id not in self._flows:
            flow, mask = self.flow_for(pair, src_hw, trg_hw)
            self._flows[pair.pair_id] = (torch.as_tensor(flow, dtype=torch.float32)[None],
                                         torch.as_tensor(mask, dtype=torch.bool)[None])
        flow, mask = self._flows[pair.pair_id]
        return StoredPair(pair.pair_id, self.maps(pair.src), self.maps(pair.trg), flow, mask, src_hw, trg_hw)


def stored_batch_factory(data: StoredPairData, batch_size: int):
    """``batches(epoch, generator)`` for ``training.fit``: the pairs shuffled, in lists of ``batch_size``."""

    def batches(epoch: int, generator: torch.Generator) -> Iterator[list[StoredPair]]:
        order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            yield [data[i] for i in order[start:start + batch_size]]

    return batches


def stored_match_loss(model: torch.nn.Module, batch: Sequence[StoredPair]) -> tuple[torch.Tensor, dict[str, float]]:
    """``loss_fn(model, batch)`` for ``training.fit``: the matching loss (``loss.matching_loss``) of the network's
    correlation of each pair's stored maps (``SiameseFlowNet.correlate``), averaged over the pairs. Returns
    (loss, {match_ce, match_share})."""
    device = next(p for p in model.parameters()).device
    losses, shares = [], []
    for item in batch:
        corr = model.correlate({n: f.to(device) for n, f in item.src.items()},
                               {n: f.to(device) for n, f in item.trg.items()})
        ce, share = matching_loss(corr, item.flow.to(device), item.mask.to(device), model.beta,
                                  covered_hw=item.src_hw, target_hw=item.trg_hw)
        losses.append(ce)
        shares.append(share)
    loss = torch.stack(losses).mean()
    return loss, {"match_ce": float(loss.detach()), "match_share": sum(shares) / len(shares)}


__all__ = ["StoredPair", "StoredPairData", "stored_batch_factory", "stored_match_loss"]
