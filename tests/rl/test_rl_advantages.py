"""Advantage estimators: closed-form identities and loop-version equivalence."""

from collections import deque

import numpy as np
import pytest
import torch

from scorealign.rl import advantages as A


def _rewards_and_ids(seed=0, sizes=(4, 2, 3, 5)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.full((k,), i) for i, k in enumerate(sizes)])
    perm = torch.randperm(len(ids), generator=g)  # groups interleaved, not contiguous
    return torch.randn(len(ids), generator=g) * 3 + 1, ids[perm]


def test_leave_one_out_matches_definition_and_identity():
    r, ids = _rewards_and_ids()
    adv = A.leave_one_out(r, ids)
    for i in range(len(r)):  # loop version: A_i = r_i − mean of the others in its group
        others = [r[j] for j in range(len(r)) if ids[j] == ids[i] and j != i]
        assert adv[i] == pytest.approx(float(r[i] - torch.stack(others).mean()), abs=1e-5)
    for g in ids.unique():  # = K/(K−1)(r_i − r̄), and sums to zero per prompt
        m = ids == g
        k = int(m.sum())
        torch.testing.assert_close(adv[m], k / (k - 1) * (r[m] - r[m].mean()), atol=1e-5,
                                   rtol=0)
        assert float(adv[m].sum()) == pytest.approx(0.0, abs=1e-5)


def test_leave_one_out_string_ids_and_clip():
    r = torch.tensor([0.0, 10.0, 1.0, 3.0])
    adv = A.leave_one_out(r, ["a", "a", "b", "b"], adv_clip=5.0)
    torch.testing.assert_close(adv, torch.tensor([-5.0, 5.0, -2.0, 2.0]))


def test_leave_one_out_needs_two_samples_per_prompt():
    with pytest.raises(ValueError, match=r"K >= 2.*'lonely': 1"):
        A.leave_one_out(torch.tensor([1.0, 2.0, 3.0]), ["x", "x", "lonely"])


def test_group_advantages_zero_mean_and_loop_equivalence():
    r, ids = _rewards_and_ids(1)
    adv = A.group(r, ids)
    for g in ids.unique():
        m = ids == g
        assert float(adv[m].mean()) == pytest.approx(0.0, abs=1e-5)
        ref = (r[m] - r[m].mean()) / (r[m].std(unbiased=False) + 1e-4)
        torch.testing.assert_close(adv[m], ref, atol=1e-5, rtol=0)
    # Centering only is LOO scaled by (K−1)/K.
    c = A.group(r, ids, std_normalize=False)
    loo = A.leave_one_out(r, ids)
    for g in ids.unique():
        m = ids == g
        k = int(m.sum())
        torch.testing.assert_close(c[m], (k - 1) / k * loo[m], atol=1e-5, rtol=0)
    glob = A.group(r, ids, global_std=True)
    torch.testing.assert_close(glob, c / (r.std(unbiased=False) + 1e-4), atol=1e-5, rtol=0)


def test_group_of_one_is_zero_and_batch_whitening():
    assert A.group(torch.tensor([3.0, 1.0, 2.0]), [0, 1, 1])[0] == 0.0
    r, _ = _rewards_and_ids(2)
    b = A.batch(r)
    assert float(b.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(b.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_value_baseline_per_sample_and_per_step():
    r = torch.tensor([1.0, 2.0])
    torch.testing.assert_close(A.value(r, None, torch.tensor([0.5, 3.0])),
                               torch.tensor([0.5, -1.0]))
    v = torch.tensor([[0.0, 1.0, 2.0], [2.0, 2.0, 2.0]])
    torch.testing.assert_close(A.value(r, None, v), torch.tensor([[1.0, 0.0, -1.0], [0.0] * 3]))
    with pytest.raises(ValueError, match="values"):
        A.value(r, None, None)


def _ddpo_reference(batches, buffer_size, min_count):
    """Loop version of DDPO's tracker (deque per prompt, batch fallback), in numpy."""
    stats, outs = {}, []
    for prompts, rewards in batches:
        prompts, rewards = np.array(prompts), rewards.double().numpy()
        adv = np.empty_like(rewards)
        for p in np.unique(prompts):
            pr = rewards[prompts == p]
            stats.setdefault(p, deque(maxlen=buffer_size)).extend(pr)
            src = rewards if len(stats[p]) < min_count else np.array(stats[p])
            adv[prompts == p] = (pr - src.mean()) / (src.std() + 1e-6)
        outs.append(torch.from_numpy(adv))
    return outs


def _batches(n=5, seed=3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 4, (12,), generator=g).tolist()
        out.append(([f"p{i}" for i in ids], torch.randn(12, generator=g)))
    return out


def test_per_prompt_matches_ddpo_loop_version():
    batches = _batches()
    ref = _ddpo_reference(batches, buffer_size=6, min_count=4)
    tracker = A.PerPromptStatTracker(buffer_size=6, min_count=4)
    for (prompts, rewards), expected in zip(batches, ref):
        adv = A.per_prompt(rewards, prompts, tracker=tracker)
        torch.testing.assert_close(adv.double(), expected, atol=1e-5, rtol=0)


def test_per_prompt_state_round_trip_is_exact(tmp_path):
    from scorealign.run.checkpoint import load_checkpoint, save_checkpoint

    batches = _batches(4, seed=5)
    full = A.build_advantage("per_prompt", buffer_size=5, min_count=3, adv_clip=5.0)
    first = A.build_advantage("per_prompt", buffer_size=5, min_count=3, adv_clip=5.0)
    for prompts, rewards in batches[:2]:
        full(rewards, prompts), first(rewards, prompts)
    save_checkpoint(tmp_path, 2, {"advantage": first.state_dict()})
    state, _ = load_checkpoint(tmp_path / "step_000002")
    resumed = A.build_advantage("per_prompt", buffer_size=5, min_count=3, adv_clip=5.0)
    resumed.load_state_dict(state["advantage"])
    for prompts, rewards in batches[2:]:
        assert torch.equal(full(rewards, prompts), resumed(rewards, prompts))
    with pytest.raises(ValueError, match="buffer_size"):
        A.PerPromptStatTracker(buffer_size=7, min_count=3).load_state_dict(first.state_dict())


def test_build_advantage_validates_names_and_keys():
    with pytest.raises(KeyError, match="leave_one_out"):
        A.build_advantage("nope")
    with pytest.raises(TypeError, match="std_normalise"):
        A.build_advantage("group", std_normalise=False)
    est = A.build_advantage("value")
    assert est.state_dict() == {}
    torch.testing.assert_close(est(torch.ones(2), None, torch.zeros(2)), torch.ones(2))
