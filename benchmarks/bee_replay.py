"""BEE's rounds replayed on a score bank (benchmarks/bee_bank.py), for any policy, reward and T.

``replay`` runs exactly the loop of ``xaibench.attribution.bee.explore`` (choose an arm per input,
score its map, reward, update the policy, keep the best map), with xaibench's own ``ThompsonPolicy``
and ``percentile_reward``, except that the map of round t is the next unused draw of the chosen arm in
the bank instead of a fresh path integral: the same distribution, at no model cost. Scores are signed
so that higher is better. The variants under study:

  reward     percentile   BEE's: percentile rank among the input's earlier scores (xaibench's code)
             improvement  1 when the score beats every earlier score of the input, else 0 (0.5 first)
             absolute     the score itself, scaled to [0, 1] by the 1st and 99th percentile of the
                          train bank's scores for the metric (how good the map is, not how it ranks)
             mixed        absolute in the first round, improvement after it
  posterior  pretrained   the pretrained posterior as it is
             tempered     its precisions divided by ``TEMPER`` (wider draws: more exploration)
             reset        its means with the prior's precision (1)
             prior        no pretraining
  context    model        the model's penultimate features, projected (``bee``'s context)
             none         the constant 1 alone: one arm preference for all inputs (non-contextual)
  state      False        the context alone
             True         the context extended by the input's state: a one-hot of the arm whose map
                          is kept so far, and a flag for the first round (no map yet)
  cover      none         every round, any arm
             once         each input draws from every arm once before any arm twice (the policy
                          picks among the arms it has not drawn yet), then any arm
             cycle        the policy picks among the arms the input has drawn least often: every arm
                          once, then every arm twice, ... (the policy orders each cycle)
  choice     thompson / greedy (the posterior mean's best arm, pretrained policies only) / uniform
"""

from __future__ import annotations

import dataclasses

import torch

from xaibench.attribution.policy import ThompsonPolicy, percentile_reward

TEMPER = 10.0
PRETRAIN_CHUNK = 64  # bee.pretrain's chunk


@dataclasses.dataclass(frozen=True)
class Variant:
    reward: str = "percentile"
    posterior: str = "pretrained"
    finetune: bool = True
    choice: str = "thompson"
    context: str = "model"
    state: bool = False
    cover: str = "none"

    def label(self) -> str:
        if self.choice == "greedy":
            return f"greedy/{self.reward}/{self.posterior}" + ("" if self.cover == "none" else f"/{self.cover}")
        if self.choice != "thompson":
            return self.choice + ("" if self.cover == "none" else f"/{self.cover}")
        return (f"{self.reward}/{self.posterior}/{'finetune' if self.finetune else 'frozen'}"
                + ("/no-context" if self.context == "none" else "") + ("/state" if self.state else "") + ("" if self.cover == "none" else f"/{self.cover}"))

    def contexts(self, contexts: torch.Tensor) -> torch.Tensor:
        """The contexts this variant's policy sees: all, or the bias column alone."""
        return contexts if self.context == "model" else contexts[:, -1:]


@dataclasses.dataclass(frozen=True)
class Replay:
    """What a replay gives per input: the kept map's oriented score (NaN: none finite), its arm and
    draw index in the bank (-1: none), and the policy after the rounds."""

    best: torch.Tensor
    policy: ThompsonPolicy
    arm: torch.Tensor
    draw: torch.Tensor


def reward_of(kind: str, s: torch.Tensor, history: torch.Tensor, scale: tuple[float, float]) -> torch.Tensor:
    """Rewards in [0, 1] of the finite scores ``s`` (oriented) given each input's earlier scores."""
    if kind == "percentile":
        return percentile_reward(s, history, True)
    if kind == "improvement":
        if history.shape[1] == 0:
            return torch.full_like(s, 0.5)
        earlier = torch.where(torch.isnan(history), -torch.inf, history).amax(dim=1)
        return torch.where(torch.isinf(earlier), 0.5, (s > earlier).double())
    if kind == "absolute":
        low, high = scale
        return ((s - low) / max(high - low, 1e-12)).clamp(0, 1)
    if kind == "mixed":
        return reward_of("absolute" if history.shape[1] == 0 else "improvement", s, history, scale)
    raise ValueError(kind)


def cover_mask(cover: str, used: torch.Tensor) -> torch.Tensor | None:
    """(N, A) the arms each input may take this round given its draws so far ``used`` (None: any)."""
    if cover == "once":
        fresh = used == 0
        return ~fresh.any(dim=1, keepdim=True) | fresh
    if cover == "cycle":  # bee's rule
        return used == used.amin(dim=1, keepdim=True)
    return None


def with_state(contexts: torch.Tensor, kept: torch.Tensor, arms: int) -> torch.Tensor:
    """Contexts extended by a one-hot of the kept map's arm (-1: none yet) and a first-round flag."""
    state = torch.zeros((contexts.shape[0], arms + 1), dtype=contexts.dtype)
    has = kept >= 0
    state[has, kept[has]] = 1.0
    state[~has, arms] = 1.0
    return torch.cat([contexts, state], dim=1)


def replay(bank: torch.Tensor, contexts: torch.Tensor, rounds: int, variant: Variant,
           policy: ThompsonPolicy | None, arms: tuple[str, ...], generator: torch.Generator,
           scale: tuple[float, float] = (0.0, 1.0), learn: bool | None = None) -> Replay:
    """``rounds`` rounds of BEE over the inputs of ``bank`` ((N, A, K) oriented scores, K >= rounds)
    with contexts (N, d): the kept maps' scores, arms and draws, and the final policy."""
    n, a, k = bank.shape
    contexts = variant.contexts(contexts)
    if rounds > k:
        raise ValueError(f"{rounds} rounds need {rounds} draws per arm, the bank has {k}")
    policy = policy if policy is not None else ThompsonPolicy.prior(arms, contexts.shape[1])
    learn = variant.finetune if learn is None else learn
    used = torch.zeros((n, a), dtype=torch.long)
    history = torch.full((n, rounds), float("nan"), dtype=torch.float64)
    index = torch.arange(n)
    kept = torch.full((n,), -1, dtype=torch.long)
    kept_draw = torch.full((n,), -1, dtype=torch.long)
    best = torch.full((n,), -torch.inf, dtype=torch.float64)
    for t in range(rounds):
        seen = with_state(contexts, kept, a) if variant.state else contexts
        allowed = cover_mask(variant.cover, used)
        if variant.choice == "thompson":  # xaibench's own choice, as ``bee`` makes it
            chosen = policy.choose(seen, generator, allowed)
        else:  # greedy: the posterior mean's order; uniform: a random order of the arms
            order = (seen.double() @ policy.mean.T if variant.choice == "greedy"
                     else torch.rand((n, a), generator=generator, dtype=torch.float64))
            chosen = order.masked_fill(~allowed, -torch.inf).argmax(dim=1) if allowed is not None else order.argmax(dim=1)
        draw = used[index, chosen]
        s = bank[index, chosen, draw]
        used[index, chosen] += 1
        finite = torch.isfinite(s)
        if variant.choice in ("thompson", "greedy") and learn and finite.any():
            rewards = reward_of(variant.reward, s[finite], history[finite, :t], scale)
            policy = policy.updated(seen[finite], chosen[finite], rewards, generator)
        history[:, t] = s
        better = finite & (s > best)
        best, kept = torch.where(better, s, best), torch.where(better, chosen, kept)
        kept_draw = torch.where(better, draw, kept_draw)
    return Replay(torch.where(torch.isinf(best), float("nan"), best), policy, kept, kept_draw)


def pretrain(bank: torch.Tensor, contexts: torch.Tensor, rounds: int, variant: Variant,
             arms: tuple[str, ...], generator: torch.Generator, scale: tuple[float, float]) -> ThompsonPolicy:
    """bee.pretrain on the train bank: chunks of 64 inputs, ``rounds`` learning rounds each."""
    policy = ThompsonPolicy.prior(arms, variant.contexts(contexts).shape[1] + (len(arms) + 1) * variant.state)
    for start in range(0, bank.shape[0], PRETRAIN_CHUNK):
        rows = slice(start, start + PRETRAIN_CHUNK)
        policy = replay(bank[rows], contexts[rows], rounds, variant, policy, arms, generator, scale, learn=True).policy
    return policy


def starting_policy(pretrained: ThompsonPolicy, kind: str) -> ThompsonPolicy | None:
    """The policy the held-out replay starts from, per the posterior variant (None: the prior)."""
    if kind == "pretrained":
        return pretrained
    if kind == "tempered":
        return ThompsonPolicy(pretrained.arms, pretrained.mean, pretrained.precision / TEMPER)
    if kind == "reset":
        return ThompsonPolicy(pretrained.arms, pretrained.mean, torch.ones_like(pretrained.precision))
    if kind == "prior":
        return None
    raise ValueError(kind)


def expected_best_of(bank: torch.Tensor, rounds: int) -> torch.Tensor:
    """(N, A) exact expectation of the best of ``rounds`` draws of one arm taken without replacement
    from its K banked draws: the j-th smallest of K is the maximum with probability
    C(j - 1, T - 1) / C(K, T). NaN where an arm has a NaN draw."""
    k = bank.shape[2]
    ordered = torch.where(torch.isnan(bank), -torch.inf, bank).sort(dim=2).values
    j = torch.arange(1, k + 1, dtype=torch.float64)
    weights = torch.exp(torch.lgamma(j) - torch.lgamma(j - rounds + 1) - torch.lgamma(torch.tensor(rounds, dtype=torch.float64))
                        - (torch.lgamma(torch.tensor(k + 1.0)) - torch.lgamma(torch.tensor(rounds + 1.0))
                           - torch.lgamma(torch.tensor(k - rounds + 1.0))))
    weights = torch.where(j >= rounds, weights, torch.zeros_like(weights))
    finite = torch.isfinite(ordered)
    value = (torch.where(finite, ordered, 0.0) * weights).sum(dim=2)
    return torch.where(finite.all(dim=2), value, float("nan"))  # an arm with a NaN draw: undefined
