"""BEE's contextual Thompson-sampling policy: it learns synthetic bandits with a known best arm (fixed and
context-dependent), its update solves Chapelle & Li's Laplace step exactly, it is reproducible, and it
stores safely; percentile_reward on hand examples."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from xaibench.attribution.policy import (
    POLICY_FORMAT,
    POLICY_VERSION,
    ThompsonPolicy,
    percentile_reward,
)
from xaibench.core.errors import InputError

ARMS = ("zero", "uniform", "blur")
NAN = float("nan")


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # tiny LAPACK calls in a loop: thread wake-ups dominate on a busy 2-core machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def contexts(n: int, generator: torch.Generator) -> torch.Tensor:
    """d = 4: three standard normal features and a constant 1 (a bias)."""
    c = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    c[:, 3] = 1.0
    return c


def simulate(
    theta: torch.Tensor, seed: int, rounds: int = 300, batch: int = 16
) -> tuple[ThompsonPolicy, list[float]]:
    """Rounds of choose / updated on a logistic bandit, P(reward | arm a, c) = sigmoid(theta_a . c).

    The reward passed is the true probability, so the label updated() draws is a Bernoulli reward.
    Returns the policy and the mean regret of each round.
    """
    generator = gen(seed)
    policy = ThompsonPolicy.prior(ARMS, 4)
    regrets = []
    for _ in range(rounds):
        c = contexts(batch, generator)
        probability = torch.sigmoid(c @ theta.T)
        arm = policy.choose(c, generator)
        got = probability.gather(1, arm[:, None])[:, 0]
        regrets.append((probability.max(dim=1).values - got).mean().item())
        policy = policy.updated(c, arm, got, generator)
    return policy, regrets


def check_learned(theta: torch.Tensor, policy: ThompsonPolicy, regrets: list[float]) -> None:
    generator = gen(99)
    fresh = contexts(2000, generator)
    probability = torch.sigmoid(fresh @ theta.T)
    best = probability.argmax(dim=1)
    assert (policy.choose(fresh, generator) == best).double().mean() >= 0.9
    uniform_regret = (probability.max(dim=1).values - probability.mean(dim=1)).mean().item()
    late = sum(regrets[-100:]) / 100
    assert late < 0.1 * uniform_regret and late < 0.02
    shares = policy.choice_probabilities(fresh[:200], generator, draws=64)
    assert (shares.gather(1, best[:200, None]) > 0.5).double().mean() >= 0.9


def test_learns_a_fixed_best_arm() -> None:
    # same slope for every arm, arm 1 has the highest bias: it is best for every context
    theta = torch.tensor([[0.5, 0.5, 0.0, -1.0], [0.5, 0.5, 0.0, 1.0], [0.5, 0.5, 0.0, 0.0]]).double()
    policy, regrets = simulate(theta, seed=1)
    check_learned(theta, policy, regrets)
    assert policy.mean[1, 3] > policy.mean[2, 3] > policy.mean[0, 3]


def test_learns_a_context_dependent_best_arm() -> None:
    # arm 0 is best where c_0 > 0, arm 1 where c_0 < 0, arm 2 never
    theta = torch.tensor([[3.0, 0.0, 0.0, 0.0], [-3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]]).double()
    policy, regrets = simulate(theta, seed=2)
    check_learned(theta, policy, regrets)
    assert policy.mean[0, 0] > 1 and policy.mean[1, 0] < -1


@pytest.mark.parametrize(("reward", "y"), [(1.0, 1.0), (0.0, -1.0)])
def test_update_solves_the_one_dimensional_laplace_step(reward: float, y: float) -> None:
    m, q, c = 0.3, 2.0, 1.5
    as64 = torch.float64
    policy = ThompsonPolicy(("a",), torch.tensor([[m]], dtype=as64), torch.tensor([[q]], dtype=as64))
    new = policy.updated(torch.tensor([[c]]), torch.tensor([0]), torch.tensor([reward]), gen())
    w = new.mean.item()
    # first-order condition of 0.5 q (w - m)^2 + log(1 + exp(-y w c))
    assert abs(q * (w - m) - y * c / (1 + math.exp(y * w * c))) < 1e-10
    p = 1 / (1 + math.exp(-w * c))
    assert new.precision.item() == pytest.approx(q + c * c * p * (1 - p), rel=1e-14)
    assert (w > m) == (y > 0)


def test_update_is_each_arms_minimiser() -> None:
    generator = gen(3)
    policy = ThompsonPolicy(ARMS[:2], torch.randn(2, 3, generator=generator, dtype=torch.float64),
                            torch.rand(2, 3, generator=generator, dtype=torch.float64) + 0.5)
    c = torch.randn(12, 3, generator=generator, dtype=torch.float64) * 2
    arm = torch.tensor([0, 1] * 6)
    rewards = torch.rand(12, generator=generator, dtype=torch.float64)
    new = policy.updated(c, arm, rewards, gen(4))
    y = torch.where(torch.rand(12, generator=gen(4), dtype=torch.float64) < rewards, 1.0, -1.0).double()
    for a in range(2):
        rows = arm == a
        w = new.mean[a]
        s = torch.sigmoid(-y[rows] * (c[rows] @ w))
        grad = policy.precision[a] * (w - policy.mean[a]) - (y[rows] * s) @ c[rows]
        assert grad.abs().max() < 1e-10
        p = torch.sigmoid(c[rows] @ w)
        gained = (c[rows] ** 2 * (p * (1 - p))[:, None]).sum(0)
        torch.testing.assert_close(new.precision[a], policy.precision[a] + gained)


def test_update_converges_on_a_separable_batch_with_a_weak_prior() -> None:
    # every label +1 and every context positive: the likelihood alone has no minimiser, the prior bounds w
    q = 1e-4
    c = torch.randn(50, 3, generator=gen(11), dtype=torch.float64).abs() * 5
    new = ThompsonPolicy.prior(ARMS[:1], 3, precision=q).updated(c, torch.zeros(50, dtype=torch.long),
                                                                 torch.ones(50), gen())
    w = new.mean[0]
    assert (q * w - torch.sigmoid(-(c @ w)) @ c).abs().max() < 1e-10
    assert (w > 1).all()


def test_reproducible_and_unobserved_arms_unchanged() -> None:
    policy = ThompsonPolicy(ARMS, torch.randn(3, 4, generator=gen(5), dtype=torch.float64),
                            torch.rand(3, 4, generator=gen(6), dtype=torch.float64) + 0.1)
    c = contexts(10, gen(7))
    assert torch.equal(policy.choose(c, gen(8)), policy.choose(c, gen(8)))
    assert policy.choose(c, gen(8)).dtype == torch.int64
    arm = torch.tensor([0, 2] * 5)
    rewards = torch.linspace(0, 1, 10)
    first, second = (policy.updated(c, arm, rewards, gen(9)) for _ in range(2))
    assert torch.equal(first.mean, second.mean) and torch.equal(first.precision, second.precision)
    assert torch.equal(first.mean[1], policy.mean[1]) and torch.equal(first.precision[1], policy.precision[1])
    assert not torch.equal(first.mean[0], policy.mean[0])
    assert (first.precision >= policy.precision).all()
    assert first.mean.dtype == torch.float64 and first.arms == ARMS
    shares = policy.choice_probabilities(c, gen(10), draws=50)
    assert shares.shape == (10, 3) and torch.allclose(shares.sum(1), torch.ones(10, dtype=torch.float64))
    assert torch.equal(shares, policy.choice_probabilities(c, gen(10), draws=50))


def test_prior_and_a_confident_policy() -> None:
    prior = ThompsonPolicy.prior(ARMS, 4, precision=2.0)
    assert torch.equal(prior.mean, torch.zeros(3, 4, dtype=torch.float64))
    assert torch.equal(prior.precision, torch.full((3, 4), 2.0, dtype=torch.float64))
    shares = prior.choice_probabilities(contexts(1, gen()), gen(), draws=3000)
    torch.testing.assert_close(shares, torch.full((1, 3), 1 / 3, dtype=torch.float64), atol=0.04, rtol=0)
    mean = torch.tensor([[0.0] * 4, [0.0, 0.0, 0.0, 5.0], [0.0] * 4], dtype=torch.float64)
    sure = ThompsonPolicy(ARMS, mean, torch.full((3, 4), 1e8, dtype=torch.float64))
    assert (sure.choose(contexts(50, gen()), gen()) == 1).all()


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.choose(torch.zeros(3, 5), gen()),
        lambda p: p.choose(torch.zeros(0, 4), gen()),
        lambda p: p.choose(torch.full((2, 4), NAN), gen()),
        lambda p: p.updated(torch.zeros(2, 4), torch.tensor([0, 3]), torch.tensor([0.5, 0.5]), gen()),
        lambda p: p.updated(torch.zeros(2, 4), torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5]), gen()),
        lambda p: p.updated(torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([0.5, 1.5]), gen()),
        lambda p: p.updated(torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([0.5, NAN]), gen()),
        lambda p: p.updated(torch.zeros(2, 4), torch.tensor([0, 1]), torch.tensor([0.5]), gen()),
        lambda p: p.updated(torch.zeros(2, 4), torch.tensor([0, 1]), torch.ones(2), gen(), newton_steps=0),
        lambda p: p.choice_probabilities(torch.zeros(2, 4), gen(), draws=0),
        lambda p: ThompsonPolicy.prior(("a", "a"), 4),
        lambda p: ThompsonPolicy.prior((), 4),
        lambda p: ThompsonPolicy.prior(ARMS, 0),
        lambda p: ThompsonPolicy.prior(ARMS, 4, precision=0.0),
        lambda p: ThompsonPolicy(ARMS, p.mean, -p.precision),
        lambda p: ThompsonPolicy(ARMS, p.mean.float(), p.precision),
        lambda p: ThompsonPolicy(ARMS[:2], p.mean, p.precision),
    ],
)
def test_bad_values_raise_input_error(call: Callable[[ThompsonPolicy], object]) -> None:
    with pytest.raises(InputError):
        call(ThompsonPolicy.prior(ARMS, 4))


def test_percentile_reward_hand_values() -> None:
    score = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0])
    history = torch.tensor([
        [0.0, 1.0, NAN, NAN],  # one below, one tie: (1 + 0.5) / 2
        [NAN, NAN, NAN, NAN],  # empty: 0.5
        [3.0, 3.0, 5.0, NAN],  # two ties, one above: 1 / 3
        [1.0, 2.0, 3.0, 3.5],  # best so far: 1
        [1.0, 2.0, 3.0, 3.5],  # worst so far: 0
    ])
    higher = percentile_reward(score, history, higher_is_better=True)
    assert higher.dtype == torch.float64
    assert higher.tolist() == [0.75, 0.5, pytest.approx(1 / 3), 1.0, 0.0]
    lower = percentile_reward(score, history, higher_is_better=False)
    assert lower.tolist() == [0.25, 0.5, pytest.approx(2 / 3), 0.0, 1.0]
    assert percentile_reward(torch.tensor([7.0]), torch.zeros(1, 0), True).tolist() == [0.5]
    assert percentile_reward(torch.tensor([2.0]), torch.tensor([[2.0]]), False).tolist() == [0.5]


@pytest.mark.parametrize(
    ("score", "history"),
    [
        (torch.tensor([NAN]), torch.zeros(1, 2)),
        (torch.tensor([1.0]), torch.tensor([[math.inf, 0.0]])),
        (torch.tensor([1.0, 2.0]), torch.zeros(1, 2)),
        (torch.tensor(1.0), torch.zeros(1, 2)),
    ],
)
def test_percentile_reward_rejects_bad_input(score: torch.Tensor, history: torch.Tensor) -> None:
    with pytest.raises(InputError):
        percentile_reward(score, history, True)


def test_save_load_round_trip(tmp_path: Path) -> None:
    policy, _ = simulate(torch.zeros(3, 4, dtype=torch.float64), seed=4, rounds=3)
    path = tmp_path / "policy.safetensors"
    policy.save(path, {"model_sha256": "ab" * 32, "metric": "deletion"})
    loaded, metadata = ThompsonPolicy.load(path)
    assert loaded.arms == ARMS and metadata == {"model_sha256": "ab" * 32, "metric": "deletion"}
    assert torch.equal(loaded.mean, policy.mean) and torch.equal(loaded.precision, policy.precision)
    assert [p.name for p in tmp_path.iterdir()] == ["policy.safetensors"]  # no staging file left
    with pytest.raises(InputError, match="reserved"):
        policy.save(tmp_path / "other.safetensors", {"arms": "[]"})
    with pytest.raises(InputError):
        policy.save(tmp_path / "other.safetensors", {"metric": 3})  # type: ignore[dict-item]
    assert not (tmp_path / "other.safetensors").exists()


def test_foreign_files_raise_input_error(tmp_path: Path) -> None:
    policy = ThompsonPolicy.prior(ARMS, 4)
    foreign = tmp_path / "attributions.safetensors"
    save_file({"mean": policy.mean, "precision": policy.precision}, str(foreign), metadata={"method": "ig"})
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    lying = tmp_path / "lying.safetensors"
    header = {"format": POLICY_FORMAT, "version": POLICY_VERSION, "arms": json.dumps(["a", "b"]), "dim": "4"}
    save_file({"mean": policy.mean, "precision": policy.precision}, str(lying), metadata=header)
    wrong_dim = tmp_path / "wrong_dim.safetensors"
    save_file({"mean": policy.mean, "precision": policy.precision}, str(wrong_dim),
              metadata={**header, "arms": json.dumps(list(ARMS)), "dim": "5"})
    for path in (foreign, garbage, lying, wrong_dim, tmp_path / "missing.safetensors"):
        with pytest.raises(InputError):
            ThompsonPolicy.load(path)


def test_choose_among_allowed_arms() -> None:
    policy = ThompsonPolicy(("a", "b", "c"), torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 0.0]], dtype=torch.float64),
                            torch.full((3, 2), 1e6, dtype=torch.float64))  # arm b wins every draw
    contexts = torch.tensor([[1.0, 1.0]] * 4, dtype=torch.float64)
    free = policy.choose(contexts, torch.Generator().manual_seed(3))
    assert free.tolist() == [1, 1, 1, 1]
    everything = torch.ones(4, 3, dtype=torch.bool)
    torch.testing.assert_close(policy.choose(contexts, torch.Generator().manual_seed(3), everything), free)
    allowed = torch.tensor([[True, False, True], [False, False, True], [True, True, True], [True, False, False]])
    picks = policy.choose(contexts, torch.Generator().manual_seed(3), allowed)
    assert picks[1] == 2 and picks[2] == 1 and picks[3] == 0 and picks[0] in (0, 2)
    for bad in (torch.ones(4, 2, dtype=torch.bool), torch.ones(4, 3), allowed & torch.tensor([True, True, False, True])[:, None]):
        with pytest.raises(InputError, match="allowed"):
            policy.choose(contexts, torch.Generator(), bad)
