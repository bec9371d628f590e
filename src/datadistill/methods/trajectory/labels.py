"""The one soft-label path of the trajectory family (DATM, PAD): how the label logits start, and
the learned logits themselves.

The labels are logits z (N, K) learned with the images; the student trains on softmax(z) with the
soft cross-entropy (`train.classification_loss` on an (N, K) matrix, which is the authors'
``SoftCrossEntropy(outputs, z)``), and the synthetic set stores softmax(z).

Two ways to start them (DATM, Guo et al., ICLR 2024; code github.com/GzyAftermath/DATM, also
``distill/DATM.py`` of github.com/NUS-HPC-AI-Lab/PAD):

- ``expert``: one expert's logits on the starting images (the code's ``pix_init: real`` branch:
  expert 0 at its last epoch; here `label_expert` at `label_epoch`).
- ``average``: for each image, the mean of the logits of the experts that classify it correctly
  (argmax = its class), every expert of the folder at `label_epoch` (the code's
  ``samples_predicted_correctly`` branch). An image that no expert classifies correctly gets the
  mean over all experts (the code divides by zero there; with its own image selection it cannot
  happen, with ours only for the images of `select_correct`'s fill rule).

`select_correct` is the code's image selection: per class, the class's images in a random order,
those expert 0 classifies correctly taken in that order until there are IPC; if there are fewer,
expert 1 goes through the same order adding the ones it classifies correctly, then expert 2, and
so on. Where all experts together classify fewer than IPC images of a class correctly (the code
would loop for ever), the remaining places are filled with the class's other images in the same
random order, and the number filled is reported.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from ...nets import functional_forward

IMAGE_INITS = ("correct", "run")  # correct: select_correct; run: the run's starting images (--init)
LABEL_INITS = ("average", "expert")  # average: averaged_correct_logits; expert: one expert's logits


@torch.no_grad()
def expert_logits(net: nn.Module, w: Tensor, images: Tensor, chunk: int = 500) -> Tensor:
    """The logits of `net` with flat parameters `w` on `images` (network in eval mode, then back
    in train mode), float32."""
    was = net.training
    net.eval()
    try:
        out = torch.cat([functional_forward(net, w, images[s : s + chunk]) for s in range(0, len(images), chunk)])
    finally:
        net.train(was)
    return out.detach().float().clone()


def averaged_correct_logits(logits: Tensor, labels: Tensor) -> Tensor:
    """(E, N, K) logits of E experts on N images with classes `labels` (N,) -> (N, K): per image
    the mean over the experts whose argmax is its class; over all experts where none is."""
    correct = logits.argmax(dim=2) == labels.view(1, -1)  # (E, N)
    count = correct.sum(dim=0)  # (N,)
    summed = (logits * correct.unsqueeze(2).to(logits.dtype)).sum(dim=0)
    mean_all = logits.mean(dim=0)
    return torch.where((count > 0).unsqueeze(1), summed / count.clamp(min=1).unsqueeze(1).to(logits.dtype), mean_all)


def select_correct(
    predict: Callable[[int, Tensor], Tensor],
    candidates: Sequence[Tensor],
    ipc: int,
    num_experts: int,
    chunk: int = 256,
) -> tuple[list[Tensor], list[int]]:
    """Per class c, `ipc` positions into `candidates[c]` (the class's images, already in a random
    order), by the rule of the module doc. `predict(e, x)` is expert e's predicted classes on `x`.

    Returns (the positions per class, in the order taken; the number filled per class with
    images no expert classifies correctly)."""
    chosen_all, filled = [], []
    for c, x in enumerate(candidates):
        n = len(x)
        taken = torch.zeros(n, dtype=torch.bool)
        chosen: list[int] = []
        for e in range(num_experts):
            if len(chosen) >= ipc:
                break
            for s in range(0, n, chunk):
                hits = (predict(e, x[s : s + chunk]).cpu() == c).nonzero().flatten() + s
                for i in hits.tolist():
                    if not taken[i]:
                        taken[i] = True
                        chosen.append(i)
                        if len(chosen) == ipc:
                            break
                if len(chosen) >= ipc:
                    break
        short = max(0, min(ipc, n) - len(chosen))
        rest = (~taken).nonzero().flatten()[:short].tolist()
        chosen_all.append(torch.tensor(chosen + rest, dtype=torch.long))
        filled.append(short)
    return chosen_all, filled


class LearnedLabels:
    """Label logits learned by SGD (lr_y, momentum_y: the authors' ``optimizer_y``)."""

    def __init__(self, logits: Tensor, lr: float, momentum: float):
        self.logits = logits.detach().clone().float().requires_grad_(True)
        self.opt = torch.optim.SGD([self.logits], lr=lr, momentum=momentum)

    def probabilities(self) -> Tensor:
        """softmax(logits), differentiable (what the student trains on)."""
        return torch.softmax(self.logits, dim=1)

    def detached(self) -> Tensor:
        """softmax(logits) as the synthetic set's (N, K) labels."""
        return torch.softmax(self.logits.detach(), dim=1).clone()

    def state_dict(self) -> dict:
        return {"label_logits": self.logits.detach().cpu().clone(), "opt_y": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.logits.copy_(state["label_logits"].to(self.logits.device))
        self.opt.load_state_dict(state["opt_y"])
