"""BEE's arm-choosing policy: contextual Thompson sampling over baseline families.

BEE (Barkan, Elisha, Weill & Koenigstein, AAAI 2025, "Metric-Adapted Explanations via Baseline
Exploration-Exploitation") learns, per model and metric, which baseline family ("arm") to integrate from,
given a context embedding ``c`` of the input. Each arm ``a`` holds a diagonal Gaussian posterior
N(m_a, diag(1/q_a)) over the weights of a logistic reward model P(y = +1 | c) = sigmoid(w_a . c), updated
with the Laplace approximation of Chapelle & Li (NeurIPS 2011, "An Empirical Evaluation of Thompson
Sampling", Algorithm 3):

- choose: per input and arm draw w ~ N(m_a, 1/q_a), pick argmax_a w . c;
- update: w* = argmin 0.5 sum_j q_j (w_j - m_j)^2 + sum_i log(1 + exp(-y_i w . c_i)) over the arm's
  observations, then m <- w*, q <- q + sum_i c_i^2 p_i (1 - p_i) with p_i = sigmoid(w* . c_i);
- reward: the percentile rank of the chosen arm's metric score among the scores seen so far
  (``percentile_reward``), turned into a label y = +1 with probability equal to the reward.

The posterior is float64, everything is batched over inputs and arms, and all randomness comes from the
caller's generator. A policy is stored as safetensors (tensors ``mean`` and ``precision``; arms and the
caller's metadata in the header), never as a pickle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from xaibench.core.errors import InputError
from xaibench.core.lazy import lazy_import

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_import("torch")

POLICY_FORMAT = "xaibench.thompson_policy"
POLICY_VERSION = "1"
_RESERVED = ("format", "version", "arms", "dim")  # header keys the policy itself writes
_MAX_HALVINGS = 30  # step halvings of the damped Newton iteration before an arm keeps its iterate
_CONVERGED = 1e-13  # relative size of a Newton step (and of an objective change) that is rounding
_CHOICE_BUDGET = 1 << 22  # sampled scores held at once by choice_probabilities


@dataclasses.dataclass(frozen=True, eq=False)
class ThompsonPolicy:
    """Per-arm diagonal Gaussian posteriors over logistic reward-model weights (Chapelle & Li 2011).

    Attributes:
        arms: the arm names (BEE: baseline family names), unique; arm ``i`` is row ``i`` of the tensors.
        mean: (A, d) float64 posterior means m.
        precision: (A, d) float64 diagonal posterior precisions q, all positive.
    """

    arms: tuple[str, ...]
    mean: torch.Tensor
    precision: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "arms", tuple(self.arms))
        _check_arms(self.arms)
        for name in ("mean", "precision"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.dtype != torch.float64 or value.ndim != 2:
                raise InputError(f"policy {name} must be a 2-d float64 tensor")
            if value.shape[0] != len(self.arms) or value.shape[1] < 1:
                raise InputError(f"policy {name} has shape {tuple(value.shape)} for {len(self.arms)} arms")
            if not torch.isfinite(value).all():
                raise InputError(f"policy {name} contains NaN or infinite values")
        if self.mean.shape != self.precision.shape:
            raise InputError("policy mean and precision differ in shape")
        if not (self.precision > 0).all():
            raise InputError("policy precisions must be positive")

    @property
    def dim(self) -> int:
        """The context dimension d."""
        return self.mean.shape[1]

    @classmethod
    def prior(cls, arms: tuple[str, ...] | list[str], dim: int, precision: float = 1.0) -> ThompsonPolicy:
        """The prior of Chapelle & Li: m = 0, q = ``precision`` for every arm and weight.

        Raises:
            InputError: for no arms, repeated arms, dim < 1 or a precision that is not positive.
        """
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise InputError(f"policy dimension must be a positive int, got {dim!r}")
        if not (isinstance(precision, (int, float)) and 0 < precision < float("inf")):
            raise InputError(f"prior precision must be positive and finite, got {precision!r}")
        shape = (len(tuple(arms)), dim)
        return cls(tuple(arms), torch.zeros(shape, dtype=torch.float64, device="cpu"),
                   torch.full(shape, float(precision), dtype=torch.float64, device="cpu"))

    def choose(self, contexts: torch.Tensor, generator: torch.Generator,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
        """One Thompson draw per input: (N,) int64 index of the arm maximising w . c, w ~ N(m_a, 1/q_a).

        Only the projection w . c is drawn: for a diagonal Gaussian it is N(m_a . c, sum_j c_j^2 / q_aj),
        independent across arms, so the choice has exactly the distribution of drawing w and projecting,
        at O(N A) random numbers instead of O(N A d).

        Args:
            contexts: (N, d) context embeddings.
            generator: the only source of randomness.
            allowed: optional (N, A) bool, the arms each input may take (at least one per row); the draw
                is the same, the maximum is taken over the allowed arms only.
        """
        c = self._contexts(contexts)
        sampled = self._sample_scores(c, 1, generator)[0]
        if allowed is not None:
            mask = torch.as_tensor(allowed, device=sampled.device)
            if mask.shape != sampled.shape or mask.dtype != torch.bool or not mask.any(dim=1).all():
                raise InputError(f"allowed must be a ({c.shape[0]}, {len(self.arms)}) bool mask with an arm "
                                 "in every row")
            sampled = sampled.masked_fill(~mask, -torch.inf)
        return sampled.argmax(dim=1)

    def choice_probabilities(self, contexts: torch.Tensor, generator: torch.Generator,
                             draws: int = 256) -> torch.Tensor:
        """(N, A) float64 Monte-Carlo frequency with which ``choose`` picks each arm for each input.

        This is the learned arm distribution whose convergence to the best arm BEE studies (RQ6).

        Args:
            contexts: (N, d) context embeddings.
            generator: the only source of randomness.
            draws: Thompson draws per input.
        """
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise InputError(f"draws must be a positive int, got {draws!r}")
        c = self._contexts(contexts)
        counts = torch.zeros(c.shape[0], len(self.arms), dtype=torch.float64, device=c.device)
        # chunks of draws bound memory; every chunk covers all inputs
        chunk = max(1, _CHOICE_BUDGET // (c.shape[0] * len(self.arms)))
        for start in range(0, draws, chunk):
            picks = self._sample_scores(c, min(chunk, draws - start), generator).argmax(dim=2)
            counts.scatter_add_(1, picks.T, torch.ones(picks.T.shape, dtype=torch.float64, device=c.device))
        return counts / draws

    def updated(self, contexts: torch.Tensor, arms: torch.Tensor, rewards: torch.Tensor,
                generator: torch.Generator, newton_steps: int = 25) -> ThompsonPolicy:
        """The posterior after one observation per input (Chapelle & Li 2011, Algorithm 3).

        Input ``i`` played arm ``arms[i]`` in context ``contexts[i]`` and earned ``rewards[i]`` in [0, 1];
        its label is y = +1 with probability equal to the reward (BEE), else -1. Each arm's Laplace
        update is solved by damped Newton iterations, batched over arms; an arm without observations
        keeps its mean and precision exactly.

        Args:
            contexts: (N, d) context embeddings.
            arms: (N,) integer arm indices.
            rewards: (N,) rewards in [0, 1].
            generator: the only source of randomness (the labels).
            newton_steps: the most Newton iterations; they stop once a step is at rounding level,
                usually after a handful (a strong prior and few observations); a weak prior with a
                separable batch needs more.

        Returns:
            A new policy; this one is unchanged.
        """
        c = self._contexts(contexts)
        arm, reward = self._observations(arms, rewards, c.shape[0])
        if isinstance(newton_steps, bool) or not isinstance(newton_steps, int) or newton_steps < 1:
            raise InputError(f"newton_steps must be a positive int, got {newton_steps!r}")
        draw = torch.rand(c.shape[0], generator=generator, dtype=torch.float64, device=generator.device)
        y = torch.where(draw.to(c.device) < reward, 1.0, -1.0).to(torch.float64)
        # membership (A, N): sums over an arm's observations become matrix products, batched over arms
        member = torch.nn.functional.one_hot(arm, len(self.arms)).T.to(torch.float64)
        w = _newton(self.mean, self.precision, member, c, y, newton_steps)
        p = torch.sigmoid(torch.einsum("nd,nd->n", w[arm], c))
        precision = self.precision + member @ (c.square() * (p * (1 - p))[:, None])
        observed = (member.sum(dim=1) > 0)[:, None]
        return ThompsonPolicy(self.arms, torch.where(observed, w, self.mean),
                              torch.where(observed, precision, self.precision))

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """Write the policy as safetensors, atomically (temporary file beside ``path``, then rename).

        Args:
            path: destination file.
            metadata: caller's string entries stored in the header (model sha256, metric, ...); the keys
                format, version, arms and dim are the policy's own.

        Raises:
            InputError: for a reserved or non-string metadata entry.
        """
        from safetensors.torch import save_file

        header = _header_metadata(self, metadata or {})
        path = Path(path)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tensors = {"mean": self.mean.detach().cpu().contiguous(),
                   "precision": self.precision.detach().cpu().contiguous()}
        try:
            save_file(tensors, str(staging), metadata=header)
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path) -> tuple[ThompsonPolicy, dict[str, str]]:
        """Read a policy written by ``save``: the policy and the caller's metadata.

        Raises:
            InputError: for a missing or unreadable file, a file that is not an xaibench policy, or one
                whose tensors do not match its arms.
        """
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as handle:
                header = dict(handle.metadata() or {})
                names = set(handle.keys())
                tensors = {name: handle.get_tensor(name) for name in names & {"mean", "precision"}}
        except (OSError, SafetensorError, ValueError, RuntimeError) as err:
            raise InputError(f"cannot read policy file {path}: {str(err).splitlines()[0]}") from None
        arms = _parse_header(header, names, path)
        policy = cls(arms, tensors["mean"], tensors["precision"])
        if str(policy.dim) != header["dim"]:
            raise InputError(f"policy file {path} has dim {header['dim']} but tensors of dim {policy.dim}")
        return policy, {k: v for k, v in header.items() if k not in _RESERVED}

    # --- helpers ----------------------------------------------------------------------------------

    def _contexts(self, contexts: torch.Tensor) -> torch.Tensor:
        if not isinstance(contexts, torch.Tensor) or contexts.ndim != 2 or contexts.shape[0] == 0:
            shape = tuple(contexts.shape) if isinstance(contexts, torch.Tensor) else type(contexts).__name__
            raise InputError(f"contexts must be a non-empty (N, d) tensor, got {shape}")
        if contexts.shape[1] != self.dim:
            raise InputError(f"contexts have dimension {contexts.shape[1]}, the policy {self.dim}")
        c = contexts.detach().to(device=self.mean.device, dtype=torch.float64)
        if not torch.isfinite(c).all():
            raise InputError("contexts contain NaN or infinite values")
        return c

    def _observations(self, arms: torch.Tensor, rewards: torch.Tensor,
                      n: int) -> tuple[torch.Tensor, torch.Tensor]:
        arm = torch.as_tensor(arms, device=self.mean.device)
        integral = not (arm.dtype.is_floating_point or arm.dtype.is_complex or arm.dtype == torch.bool)
        if arm.shape != (n,) or not integral:
            raise InputError(f"arms must be {n} integer indices, got {tuple(arm.shape)} of {arm.dtype}")
        if ((arm < 0) | (arm >= len(self.arms))).any():
            raise InputError(f"arm indices must lie in [0, {len(self.arms)})")
        reward = torch.as_tensor(rewards, device=self.mean.device).to(dtype=torch.float64)
        if reward.shape != (n,):
            raise InputError(f"rewards must have shape ({n},), got {tuple(reward.shape)}")
        if not ((reward >= 0) & (reward <= 1)).all():  # also rejects NaN
            raise InputError("rewards must lie in [0, 1]")
        return arm.to(device=self.mean.device, dtype=torch.long), reward

    def _sample_scores(self, c: torch.Tensor, draws: int, generator: torch.Generator) -> torch.Tensor:
        """(draws, N, A) sampled w . c: mean m_a . c plus normal noise of variance sum_j c_j^2 / q_aj."""
        centre = c @ self.mean.T
        spread = (c.square() @ self.precision.reciprocal().T).sqrt()
        noise = torch.randn((draws, *centre.shape), generator=generator, dtype=torch.float64,
                            device=generator.device)
        return centre + spread * noise.to(c.device)


def _newton(mean: torch.Tensor, precision: torch.Tensor, member: torch.Tensor, c: torch.Tensor,
            y: torch.Tensor, steps: int) -> torch.Tensor:
    """Minimise each arm's Laplace objective by Newton's method with step halving, batched over arms.

    Pure Newton can overshoot on the logistic loss far from the optimum; halving the step until the
    objective does not increase keeps every iteration a descent step. The Hessian
    diag(q) + sum_i p_i (1 - p_i) c_i c_i^T is positive definite, so a Cholesky solve suffices.
    """
    w = mean.clone()
    value = _objective(w, mean, precision, member, c, y)
    for _ in range(steps):
        s = torch.sigmoid(-y * (w @ c.T))  # (A, N): sigmoid(-y w_a . c_i), used only where member is 1
        grad = precision * (w - mean) - (member * y * s) @ c
        curvature = member * s * (1 - s)
        hessian = torch.einsum("an,nd,ne->ade", curvature, c, c) + torch.diag_embed(precision)
        step = _solve_spd(hessian, grad)
        if step.abs().max() <= _CONVERGED * (1 + w.abs().max()):  # quadratic convergence reached
            break
        w, value = _descend(w, step, value, mean, precision, member, c, y)
    return w


def _solve_spd(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Batched solve of (A, d, d) positive definite systems for (A, d) right-hand sides."""
    # cholesky_ex skips linalg.cholesky's error check and its extra synchronisation
    factor, info = torch.linalg.cholesky_ex(matrix)
    if bool((info != 0).any()):  # numerically indefinite: fall back to a general solve
        return torch.linalg.solve(matrix, rhs)
    return torch.cholesky_solve(rhs[:, :, None], factor)[:, :, 0]


def _descend(w: torch.Tensor, step: torch.Tensor, value: torch.Tensor, mean: torch.Tensor,
             precision: torch.Tensor, member: torch.Tensor, c: torch.Tensor,
             y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per arm the largest step w - t step, t = 1, 1/2, ..., that does not increase the objective.

    Returns the new iterate and its objective; an arm without such a step keeps its iterate.
    """
    scale = torch.ones(w.shape[0], 1, dtype=w.dtype, device=w.device)
    pending = torch.ones(w.shape[0], dtype=torch.bool, device=w.device)
    best = value.clone()
    slack = _CONVERGED * (1 + value.abs())  # rounding near the optimum is not an increase
    for _ in range(_MAX_HALVINGS):
        trial = _objective(w - scale * step, mean, precision, member, c, y)
        accept = pending & (trial <= value + slack)
        best = torch.where(accept, trial, best)
        pending = pending & ~accept
        if not pending.any():
            break
        scale = torch.where(pending[:, None], scale / 2, scale)
    scale = torch.where(pending[:, None], 0.0, scale)
    return w - scale * step, best


def _objective(w: torch.Tensor, mean: torch.Tensor, precision: torch.Tensor, member: torch.Tensor,
               c: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(A,) 0.5 sum_j q_j (w_j - m_j)^2 + sum_i log(1 + exp(-y_i w . c_i)) over each arm's observations."""
    margin = y * (w @ c.T)  # (A, N)
    loss = (member * torch.nn.functional.softplus(-margin)).sum(dim=1)
    return 0.5 * (precision * (w - mean).square()).sum(dim=1) + loss


def percentile_reward(score: torch.Tensor, history: torch.Tensor, higher_is_better: bool) -> torch.Tensor:
    """BEE's reward: the percentile rank of each input's score among the scores seen so far for it.

    rank = (#history below score + 0.5 #history equal to score) / #history, so ties count half; with
    ``higher_is_better`` False it is 1 - rank (below and above swap roles). An input without history
    gets 0.5, the rank that favours no arm.

    Args:
        score: (N,) the new scores, finite.
        history: (N, H) earlier scores per input; NaN marks an empty slot. H may be 0.
        higher_is_better: the metric's direction.

    Returns:
        (N,) float64 rewards in [0, 1].
    """
    if not isinstance(score, torch.Tensor) or score.ndim != 1:
        raise InputError("score must be a 1-d tensor (one score per input)")
    if not isinstance(history, torch.Tensor) or history.ndim != 2 or history.shape[0] != score.shape[0]:
        raise InputError(f"history must have shape ({score.shape[0]}, H)")
    s = score.detach().to(torch.float64)
    h = history.detach().to(device=s.device, dtype=torch.float64)
    if not torch.isfinite(s).all():
        raise InputError("score contains NaN or infinite values")
    if torch.isinf(h).any():
        raise InputError("history contains infinite values (NaN marks an empty slot)")
    filled = ~torch.isnan(h)
    below = (h < s[:, None]).sum(dim=1, dtype=torch.float64)  # NaN compares false: empty slots never count
    ties = (h == s[:, None]).sum(dim=1, dtype=torch.float64)
    count = filled.sum(dim=1, dtype=torch.float64)
    rank = (below + 0.5 * ties) / count.clamp(min=1)
    rank = torch.where(count > 0, rank, 0.5)
    return rank if higher_is_better else torch.where(count > 0, 1 - rank, 0.5)


def _check_arms(arms: tuple[str, ...]) -> None:
    if not arms or not all(isinstance(a, str) and a for a in arms):
        raise InputError("a policy needs at least one arm, each a non-empty name")
    if len(set(arms)) != len(arms):
        raise InputError(f"policy arms repeat a name: {', '.join(arms)}")


def _header_metadata(policy: ThompsonPolicy, metadata: dict[str, str]) -> dict[str, str]:
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InputError(f"policy metadata must map strings to strings, got {key!r}: {value!r}")
        if key in _RESERVED:
            raise InputError(f"policy metadata key {key!r} is reserved")
    own = {"format": POLICY_FORMAT, "version": POLICY_VERSION, "arms": json.dumps(list(policy.arms)),
           "dim": str(policy.dim)}
    return {**metadata, **own}


def _parse_header(header: dict[str, str], names: set[str], path: str | Path) -> tuple[str, ...]:
    """The arms recorded in a policy file's header, after checking that it is one."""
    if header.get("format") != POLICY_FORMAT:
        raise InputError(f"{path} is not an xaibench Thompson policy file")
    if header.get("version") != POLICY_VERSION:
        found = header.get("version")
        raise InputError(f"policy file {path} has version {found!r}, expected {POLICY_VERSION}")
    if names != {"mean", "precision"} or "dim" not in header:
        raise InputError(f"policy file {path} lacks its tensors or dimension")
    try:
        arms = json.loads(header.get("arms", ""))
    except json.JSONDecodeError:
        arms = None
    if not isinstance(arms, list) or not all(isinstance(a, str) for a in arms):
        raise InputError(f"policy file {path} has no readable list of arms")
    return tuple(arms)
