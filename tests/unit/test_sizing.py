"""rung.sizing: efficiency models, the GPU choice per segment, weighted fair shares."""

import math
import random

import pytest

from rung.errors import InputError
from rung.sizing import GPUS, INTERCONNECTS, Measured, RingAllReduce, choose, paleo, probe, shares

pytestmark = pytest.mark.unit

# The issue's example Study: close to linear up to 8 GPUs.
ISSUE = RingAllReduce(step_seconds=0.8, gradient_bytes=4.4e8, bandwidth_gbps=100, latency_seconds=5e-5)
# E(4) = 0.727 >= 0.7 > E(5) = 0.666: a slow link, 2 * 5e8 B / 10 GB/s = 0.1 s per step of
# all-reduce traffic against 0.8 s of compute. The cluster test uses this set.
KNEE_AT_4 = RingAllReduce(step_seconds=0.8, gradient_bytes=5e8, bandwidth_gbps=10, latency_seconds=5e-5)


# ---- models ----------------------------------------------------------------------------

def test_ring_all_reduce_formula_against_hand_computed_values():
    # t(2) = 0.4 + 2*1/2 * 4.4e8/1e11 + 2*1*5e-5 = 0.4 + 0.0044 + 0.0001
    assert ISSUE.step_time(1) == 0.8
    assert ISSUE.step_time(2) == pytest.approx(0.4045, rel=1e-12)
    # t(4) = 0.2 + 2*3/4 * 0.0044 + 2*3*5e-5 = 0.2 + 0.0066 + 0.0003
    assert ISSUE.step_time(4) == pytest.approx(0.2069, rel=1e-12)
    assert ISSUE.efficiency(4) == pytest.approx(0.8 / (4 * 0.2069), rel=1e-12)
    # t(8) = 0.1 + 2*7/8 * 0.0044 + 14 * 5e-5 = 0.1 + 0.0077 + 0.0007
    assert ISSUE.step_time(8) == pytest.approx(0.1084, rel=1e-12)
    assert ISSUE.efficiency(8) == pytest.approx(0.8 / 0.8672, rel=1e-12)


def test_efficiency_is_one_at_one_gpu_and_never_rises():
    rng = random.Random(3)
    for _ in range(200):
        model = RingAllReduce(rng.uniform(1e-3, 5), rng.uniform(0, 1e10), rng.uniform(1, 500), rng.uniform(0, 1e-3))
        curve = [model.efficiency(n) for n in range(1, 65)]
        assert curve[0] == 1.0
        assert all(0 < b <= a for a, b in zip(curve, curve[1:]))


def test_the_knee_parameter_set():
    assert KNEE_AT_4.efficiency(4) >= 0.7 > KNEE_AT_4.efficiency(5)
    assert KNEE_AT_4.efficiency(4) == pytest.approx(0.8 / (0.8 + 0.3 + 24 * 5e-5))


def test_ring_all_reduce_refuses_bad_parameters_naming_the_field():
    with pytest.raises(InputError, match="scaling.bandwidthGBps"):
        RingAllReduce(0.8, 4.4e8, 0, 5e-5)
    with pytest.raises(InputError, match="scaling.gradientBytes"):
        RingAllReduce(0.8, -1, 100, 5e-5)
    with pytest.raises(InputError, match="scaling.stepSeconds"):
        RingAllReduce(0, 4.4e8, 100, 5e-5)
    with pytest.raises(ValueError):
        ISSUE.step_time(0)


def test_paleo_resolves_the_tables_to_ring_parameters():
    model = paleo(flops_per_step=1e14, gradient_bytes=4.4e8, gpu="a100", interconnect="nvlink", utilisation=0.5)
    assert model == RingAllReduce(1e14 / (312e12 * 0.5), 4.4e8, 300.0, 2e-6)
    slow = paleo(1e14, 4.4e8, gpu="T4", interconnect="Ethernet_100G", utilisation=0.4, precision="fp32")
    assert slow.step_seconds == pytest.approx(1e14 / (8.1e12 * 0.4))
    assert (slow.bandwidth_gbps, slow.latency_seconds) == (12.5, 2.5e-5)
    assert paleo(1e14, 4.4e8, gpu="h100", interconnect="infiniband-ndr").bandwidth_gbps == 50.0
    for gpu in GPUS:
        for link in INTERCONNECTS:
            m = paleo(1e13, 1e8, gpu=gpu, interconnect=link)
            assert 0 < m.efficiency(8) < 1


def test_paleo_unknown_names_are_one_line_input_errors_listing_the_known_names():
    with pytest.raises(InputError) as err:
        paleo(1e14, 4.4e8, gpu="k80")
    text = str(err.value)
    assert "\n" not in text and text.startswith("scaling.gpu:") and "'k80'" in text
    assert all(name in text for name in GPUS)
    with pytest.raises(InputError, match=r"scaling.interconnect: .*nvlink, .*ethernet-100g"):
        paleo(1e14, 4.4e8, interconnect="token-ring")
    with pytest.raises(InputError, match="scaling.utilisation"):
        paleo(1e14, 4.4e8, utilisation=1.5)


def _throughputs(model, ns, repeats=2, noise=0.01, batch=256, seed=0):
    rng = random.Random(seed)
    return [(n, batch / model.step_time(n) * (1 + rng.gauss(0, noise))) for n in ns for _ in range(repeats)]


def test_measured_fit_recovers_the_generating_curve():
    fit = Measured.fit(_throughputs(KNEE_AT_4, [1, 2, 3, 4, 6, 8]))
    for n in range(1, 17):
        assert fit.efficiency(n) == pytest.approx(KNEE_AT_4.efficiency(n), abs=0.02)
    exact = Measured.fit(_throughputs(KNEE_AT_4, [1, 2, 4, 8], repeats=1, noise=0))
    for n in range(1, 33):
        assert exact.efficiency(n) == pytest.approx(KNEE_AT_4.efficiency(n), rel=1e-6)


def test_measured_fit_is_monotone_even_on_noisy_or_superlinear_data():
    rng = random.Random(5)
    for _ in range(50):
        points = [(n, rng.uniform(10, 1000)) for n in rng.sample(range(1, 9), rng.randint(2, 5))]
        fit = Measured.fit(points)
        curve = [fit.efficiency(n) for n in range(1, 33)]
        assert curve[0] == 1.0 and all(b <= a + 1e-12 for a, b in zip(curve, curve[1:]))
        assert min(fit.a, fit.b, fit.c) >= 0


def test_measured_fit_needs_two_distinct_gpu_counts():
    assert Measured.fit([]) is None
    assert Measured.fit([(2, 100.0), (2, 110.0), (2, 90.0)]) is None
    # Bad reports are skipped rather than fatal: here that leaves one distinct n.
    assert Measured.fit([(1, 100.0), (4, 0.0), (4, float("nan")), (0, 50.0)]) is None
    two = Measured.fit([(1, 100.0), (2, 180.0)])
    assert two.c == 0 and two.efficiency(2) == pytest.approx(0.9)


def test_a_measured_fit_that_disagrees_replaces_the_prediction():
    predicted = ISSUE  # optimistic: E(8) = 0.92
    assert choose(predicted, 1, 8, 0.7, free=8).n == 8
    measured = Measured.fit(_throughputs(KNEE_AT_4, [1, 2, 4]))  # the real curve bends at 4
    choice = choose(measured or predicted, 1, 8, 0.7, free=8)
    assert choice.n == 4 and choice.reason.startswith("4 GPUs: E(5) = 0.6")


# ---- choice ----------------------------------------------------------------------------

def test_the_knee_chooses_four():
    choice = choose(KNEE_AT_4, 1, 8, 0.7, free=8, share=8)
    assert (choice.n, choice.waits) == (4, False)
    assert choice.efficiency == pytest.approx(KNEE_AT_4.efficiency(4))
    assert choice.reason == "4 GPUs: E(5) = 0.67 < 0.70"


def test_a_close_to_linear_curve_takes_max():
    assert choose(ISSUE, 1, 8, 0.7, free=8).reason == "8 GPUs (max): E(8) = 0.92 >= 0.70"


def test_min_equals_max():
    assert choose(KNEE_AT_4, 2, 2, 0.7, free=8).n == 2
    # Even when the target is missed at that size: min is the floor.
    fixed = choose(KNEE_AT_4, 6, 6, 0.7, free=8)
    assert fixed.n == 6 and fixed.reason == "6 GPUs (min): even E(6) = 0.61 < 0.70"


def test_a_study_that_measured_one_gpu_count_probes_a_second():
    linear = RingAllReduce(1.0, 0.0, 1.0)
    eight = choose(linear, 1, 8, 0.7, free=16)
    assert eight.n == 8
    probed = probe(linear, eight, {8}, set(), 1, 8, free=16)
    assert probed.n == 4 and probed.reason.startswith("4 GPUs (probe): throughput measured only at 8")
    assert probe(linear, eight, set(), {8}, 1, 8, free=16) == eight     # nothing measured yet
    assert probe(linear, eight, {8}, {4}, 1, 8, free=16) == eight       # a probe runs already
    assert probe(linear, eight, {8, 4}, set(), 1, 8, free=16) == eight  # two counts: the fit decides
    one = choose(linear, 1, 1, 0.7, free=16)                           # at its minimum: probes up
    assert probe(linear, one, {1}, {1}, 1, 4, free=16).n == 2
    assert probe(linear, one, {1}, set(), 1, 4, free=1) == one          # only if it fits
    assert probe(linear, one, {1}, set(), 1, 4, free=16, share=1) == one
    fixed = choose(linear, 2, 2, 0.7, free=16)                         # min = max: nothing to probe
    assert probe(linear, fixed, {2}, set(), 2, 2, free=16) == fixed


def test_no_free_gpu_waits():
    choice = choose(KNEE_AT_4, 1, 8, 0.7, free=0, share=8, total=8)
    assert (choice.n, choice.waits, choice.efficiency) == (0, True, 0.0)
    assert choice.reason == "waits: 0 of 8 GPUs free, needs 1"
    short = choose(KNEE_AT_4, 3, 8, 0.7, free=2)
    assert short.waits and short.reason == "waits: 2 GPUs free, needs 3"


def test_a_curve_that_never_reaches_the_target_gives_min_and_says_so():
    choice = choose(KNEE_AT_4, 2, 8, 0.95, free=8)
    assert choice.n == 2 and not choice.waits
    assert choice.reason == "2 GPUs (min): even E(2) = 0.89 < 0.95"
    one = choose(KNEE_AT_4, 1, 8, 0.95, free=8)  # E(1) = 1 always reaches it
    assert one.n == 1 and one.reason == "1 GPU (min): E(2) = 0.89 < 0.95"


def test_free_gpus_and_fair_share_cap_the_choice():
    by_free = choose(ISSUE, 1, 8, 0.7, free=3, share=8, total=8)
    assert by_free.n == 3 and by_free.reason == "3 GPUs: 3 of 8 free, E(3) = 0.98"
    by_share = choose(ISSUE, 1, 8, 0.7, free=8, share=2, total=8)
    assert by_share.n == 2 and by_share.reason == "2 GPUs: fair share 2 of 8, E(2) = 0.99"
    assert choose(KNEE_AT_4, 1, 8, 0.7, free=8, share=6).n == 4  # the curve binds first
    over = choose(KNEE_AT_4, 2, 8, 0.7, free=8, share=1, total=8)
    assert over.waits and over.reason == "waits: fair share 1 of 8, needs 2"


def test_cpu_only_trials():
    cpu = choose(KNEE_AT_4, 0, 0, 0.7, free=8)
    assert (cpu.n, cpu.waits) == (0, False) and cpu.reason == "0 GPUs (CPU only): gpus.max = 0"
    # min 0: run on CPU rather than wait when no GPU fits; take GPUs when they do.
    assert choose(KNEE_AT_4, 0, 8, 0.7, free=0).waits is False
    assert choose(KNEE_AT_4, 0, 8, 0.7, free=0).n == 0
    assert choose(KNEE_AT_4, 0, 8, 0.7, free=8).n == 4


def test_choice_refuses_min_above_max():
    with pytest.raises(ValueError):
        choose(KNEE_AT_4, 3, 2, 0.7, free=8)


# ---- fair share ------------------------------------------------------------------------

def test_weights_one_to_three_and_the_first_takes_all_when_the_second_ends():
    assert shares(8, {"a": (1, 8), "b": (3, 8)}) == {"a": 2, "b": 6}
    assert shares(8, {"a": (1, 8), "b": (3, 0)}) == {"a": 8, "b": 0}
    assert shares(8, {"a": (1, 8)}) == {"a": 8}


def test_a_study_needing_less_gives_the_rest_to_the_others_by_weight():
    assert shares(8, {"a": (1, 1), "b": (1, 8), "c": (1, 8)}) == {"a": 1, "b": 4, "c": 3}
    assert shares(12, {"a": (2, 2), "b": (1, 20), "c": (2, 20)}) == {"a": 2, "b": 3, "c": 7}
    assert shares(8, {"a": (1, 2), "b": (3, 3)}) == {"a": 2, "b": 3}  # all sated, 3 idle by choice


def test_rounding_with_odd_totals_is_deterministic():
    assert shares(7, {"a": (1, 8), "b": (1, 8)}) == {"a": 4, "b": 3}
    assert shares(7, {"b": (1, 8), "a": (1, 8)}) == {"a": 4, "b": 3}  # key order, not insertion
    assert shares(5, {"x": (1, 9), "y": (1, 9), "z": (1, 9)}) == {"x": 2, "y": 2, "z": 1}
    assert shares(7, {"a": (1, 8), "b": (3, 8)}) == {"a": 2, "b": 5}  # 1.75 and 5.25
    assert shares(1, {"a": (1, 8), "b": (1, 8)}) == {"a": 1, "b": 0}


def test_zero_weights_and_zero_demands():
    assert shares(8, {"a": (0, 8), "b": (1, 8)}) == {"a": 0, "b": 8}
    assert shares(8, {"a": (0, 8), "b": (1, 2)}) == {"a": 6, "b": 2}  # nothing idle
    assert shares(8, {"a": (0, 8), "b": (0, 8)}) == {"a": 4, "b": 4}
    assert shares(8, {"a": (1, 0), "b": (2, 0)}) == {"a": 0, "b": 0}
    assert shares(0, {"a": (1, 8)}) == {"a": 0}
    assert shares(8, {}) == {}
    with pytest.raises(ValueError):
        shares(8, {"a": (-1, 8)})


def _water_level(total, demands):
    """Reference continuous max-min fair shares by bisection on GPUs per unit weight."""
    goal = min(total, sum(want for _, want in demands.values()))
    low, high = 0.0, float(total) / min(w for w, _ in demands.values()) + 1
    for _ in range(200):
        mid = (low + high) / 2
        if sum(min(want, w * mid) for w, want in demands.values()) < goal:
            low = mid
        else:
            high = mid
    return {k: min(want, w * high) for k, (w, want) in demands.items()}


def test_shares_never_exceed_total_nor_leave_gpus_idle_random_inputs():
    rng = random.Random(11)
    for _ in range(2000):
        total = rng.randint(0, 64)
        demands = {f"s{i}": (rng.choice([0, 0.5, 1, 1, 2, 3, rng.uniform(0, 5)]), rng.randint(0, 24))
                   for i in range(rng.randint(1, 7))}
        got = shares(total, demands)
        assert set(got) == set(demands)
        assert sum(got.values()) == min(total, sum(want for _, want in demands.values())) <= total
        assert all(0 <= got[k] <= want and isinstance(got[k], int) for k, (_, want) in demands.items())
        weighted = {k: d for k, d in demands.items() if d[0] > 0}
        if weighted and sum(want for _, want in weighted.values()) >= total:
            # Weighted Studies absorb everything: each within one GPU of its exact fair share.
            fair = _water_level(total, weighted)
            assert all(abs(got[k] - fair[k]) < 1 + 1e-9 for k in weighted)
            assert all(got[k] == 0 for k in demands if k not in weighted)
