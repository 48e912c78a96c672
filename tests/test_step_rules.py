"""The step-rule protocol, without a cluster: a contract every registered rule meets, the driver's terminations,
and a new rule added from outside the package (plain gradient ascent) fitting a problem through ``dmlr.fit``.

References are independent of the rules: the Newton direction is checked against a dense solve, ascent against
the objective evaluated by the kernels, the gradient-ascent fit against statsmodels-free Newton on the same data
(their optima must coincide; Newton's own correctness is checked against statsmodels in ``test_statsmodels.py``).
"""

from __future__ import annotations

import dataclasses

import dask.array as da
import numpy as np
import pytest

import dmlr
from dmlr.data.design import build_design
from dmlr.driver import LoopSettings, Termination, optimize
from dmlr.fitting.evaluator import FitPasses
from dmlr.oracle.statistics import SCORE_ONLY, WITH_INFORMATION, Request, Statistics
from dmlr.steps import RULES, DataFacts, Direction, Iterate, Objective, RuleContext, register_rule
from dmlr.steps.auto import choose
from dmlr.steps.cost import LBFGS_PASSES, NEWTON_PASSES, PassModel, choose_by_cost
from dmlr.steps.registry import make_rule, method_names
from tests.problems import draw_problem


@pytest.fixture(scope="module")
def setup():
    x, y, _ = draw_problem(2000, 3, 4, seed=41)
    design = build_design(da.from_array(x, chunks=(700, -1)), da.from_array(y, chunks=700), classes=np.unique(y))
    passes = FitPasses.over(design)
    mask = np.ones(design.n_columns)
    mask[0] = 0.0
    return design, passes, Objective(0.0, mask)


def _iterate(passes, objective, coef, request):
    return Iterate.at(coef, passes(coef, request), objective)


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_meets_the_contract(setup, name):
    design, passes, objective = setup
    d, m = design.n_columns, design.n_nonbase
    context = RuleContext(objective, m + 1)
    rule = make_rule(name, context)
    assert rule.name == name
    assert isinstance(RULES[name].first_request, Request)
    first = passes(np.zeros((d, m)), dataclasses.replace(RULES[name].first_request, gram=True, moments=True))
    rule.prepare(first)
    rule.prepare(first)  # idempotent
    start = Iterate.at(np.zeros((d, m)), first, objective)
    coef = np.random.default_rng(1).normal(scale=0.05, size=(d, m))
    it = _iterate(passes, objective, coef, WITH_INFORMATION)
    direction = rule.direction(it)
    assert isinstance(direction, Direction) and direction.step.shape == (d, m)
    assert isinstance(direction.request, Request)  # what the passes along it compute
    np.testing.assert_array_equal(rule.direction(it).step, direction.step)  # proposing changes nothing
    assert float(np.vdot(direction.step, it.gradient)) > 0  # an ascent direction
    small = _iterate(passes, objective, coef + 1e-4 * direction.step, SCORE_ONLY)
    assert small.objective > it.objective  # ... along which the objective increases
    rule.accept(start, it)
    saved = rule.state()
    again = make_rule(name, context)
    again.restore(saved, first.full_gram())
    np.testing.assert_allclose(again.direction(it).step, rule.direction(it).step, rtol=1e-12, atol=1e-14)
    fallback = rule.fallback(it)
    assert fallback is None or float(np.vdot(fallback.step, it.gradient)) > 0


def test_newton_direction_is_the_dense_solve_with_its_decrement(setup):
    design, passes, objective = setup
    d, m = design.n_columns, design.n_nonbase
    rule = make_rule("newton", RuleContext(objective, m + 1))
    it = _iterate(passes, objective, np.full((d, m), 0.02), Request(information=True))
    direction = rule.direction(it)
    g = it.gradient.ravel(order="F")
    dense = np.linalg.solve(it.stats.full_information(), g)
    np.testing.assert_allclose(direction.step.ravel(order="F"), dense, rtol=1e-10)
    assert direction.shift == 0.0 and direction.decrement == pytest.approx(g @ dense, rel=1e-10)


def test_auto_chooses_the_least_predicted_time():
    rate = 5e10
    # held in memory, many rows per task: the information's arithmetic decides (K = 6, d = 51: lbfgs; K = 2: newton)
    assert choose_by_cost(PassModel(100_000, 51, 5, 0.0, 0.02, rate), inference=True).method == "lbfgs"
    assert choose_by_cost(PassModel(100_000, 51, 1, 0.0, 0.02, rate), inference=True).method == "newton"
    # the same K = 6 problem streamed from a store whose pass reads for 10 s: fewest passes
    streamed = choose_by_cost(PassModel(100_000, 51, 5, 10.0, 0.02, rate), inference=True)
    assert streamed.method == "newton"
    assert streamed.passes == {"newton": NEWTON_PASSES, "lbfgs": LBFGS_PASSES + 1}
    # predicted = passes x (overhead + max(read, compute)): Newton's passes all read for 10 s
    assert streamed.predicted["newton"] == pytest.approx(NEWTON_PASSES * 10.02)
    # a model the driver cannot afford to factor every iteration is never Newton, however the passes cost
    big = PassModel(1_000, 200, 49, 100.0, 0.02, rate)
    assert choose_by_cost(big, inference=True).method == "lbfgs"
    # small data: the fixed per-pass cost dominates, so the rule with fewer passes
    facts = DataFacts(n_rows=100_000, n_columns=10, n_nonbase=2, task_rows=100_000, on_cluster=True)
    assert choose("auto", facts, inference=True).method == "newton"
    with pytest.raises(dmlr.InputError, match="method must be one of"):
        choose("newtn", facts, inference=True)


@dataclasses.dataclass
class GradientAscent:
    """Plain gradient ascent, scaled by the number of observations; the line search halves the step."""

    objective: Objective
    name: str = "gradient"

    def prepare(self, stats: Statistics) -> None:
        self.scale = 4.0 / stats.weight_sum  # the information is at most n/2 times the largest squared row norm

    def direction(self, it: Iterate) -> Direction:
        return Direction(self.scale * it.gradient)

    def fallback(self, it: Iterate) -> Direction | None:
        return None

    def accept(self, old: Iterate, new: Iterate) -> None:
        pass

    def state(self) -> dict[str, np.ndarray]:
        return {"scale": np.array([self.scale])}

    def restore(self, state: dict[str, np.ndarray], gram: np.ndarray | None = None) -> None:
        self.scale = float(state["scale"][0])


def test_a_rule_added_from_outside_fits_through_dmlr_fit():
    """No change to dmlr/driver.py: the rule is registered and chosen by name."""
    if "gradient" not in RULES:
        register_rule("gradient", lambda context: GradientAscent(context.objective))
    assert "gradient" in method_names()
    x, y, _ = draw_problem(3000, 2, 3, seed=43, scale=0.5)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    newton = dmlr.fit(x, y, method="newton")
    res = dmlr.fit(x, y, method="gradient", tol=1e-7, max_iter=5000)
    assert res.converged and res.method == "gradient"
    assert res.history[-1]["kind"] in ("gradient", "inference")
    np.testing.assert_allclose(res.coef, newton.coef, atol=2e-5)
    np.testing.assert_allclose(res.bse.to_numpy(), newton.bse.to_numpy(), rtol=1e-4)
    with pytest.raises(dmlr.InputError, match="exists already"):
        register_rule("gradient", lambda context: GradientAscent(context.objective))


def _rule(name):
    return make_rule(name, RuleContext(Objective(0.0, np.ones(3)), 2))


class _Counting:
    """Evaluates the objective -(coef - 1)^2 summed (optimum at 1), counting passes; stands in for DataPasses."""

    def __init__(self, n: float = 100.0) -> None:
        self.count = 0
        self.n = n

    def __call__(self, coef, request, *, intercept_only=False):
        self.count += 1
        r = 1.0 - coef
        info = np.diag(np.full(coef.size, 2.0)) if request.information else None
        return Statistics(
            n_rows=int(self.n), weight_sum=self.n, loglik=-float(np.sum(r**2)), score=2.0 * r,
            class_weights=np.array([50.0, 50.0]), information=info,
            gram=np.eye(coef.shape[0]) if request.gram else None,
            col_sum=np.zeros(coef.shape[0]) if request.moments else None,
            col_sumsq=np.ones(coef.shape[0]) if request.moments else None,
        )  # fmt: skip


@pytest.mark.parametrize("max_iter", [0, 1])
def test_the_driver_stops_at_max_iter_with_a_warning(max_iter):
    passes = _Counting()
    with pytest.warns(dmlr.ConvergenceWarning, match=rf"max_iter \({max_iter}\) reached"):
        out = optimize(passes, _rule("gradient_half"), LoopSettings(Objective(0.0, np.ones(3)), 1e-12, max_iter, False))
    assert not out.converged and out.n_iter == max_iter and out.termination is Termination.MAX_ITER
    assert passes.count == 1 + max_iter  # the first pass, then one accepted unit step per iteration


def test_the_driver_converges_on_the_gradient_and_on_the_newton_decrement():
    settings = LoopSettings(Objective(0.0, np.ones(3)), 1e-10, 10, True)
    out = optimize(_Counting(), _rule("newton"), settings, first_request=RULES["newton"].first_request)
    assert out.converged and out.n_iter == 1  # one exact Newton step reaches the quadratic's optimum
    assert out.termination in (Termination.GRADIENT, Termination.DECREMENT)
    np.testing.assert_allclose(out.final.coef, 1.0)
    assert "max |score|" in out.message or "decrement" in out.message


def test_the_driver_reports_a_failed_line_search():
    class Descending(GradientAscent):
        def direction(self, it: Iterate) -> Direction:
            return Direction(-it.gradient)  # never ascends: every trial is rejected

    if "descending" not in RULES:
        register_rule("descending", lambda context: Descending(context.objective))
    with pytest.warns(dmlr.ConvergenceWarning, match="line search found no step"):
        out = optimize(_Counting(), _rule("descending"), LoopSettings(Objective(0.0, np.ones(3)), 1e-12, 5, False))
    assert not out.converged and out.n_iter == 0 and out.termination is Termination.LINE_SEARCH


@pytest.fixture(autouse=True, scope="module")
def _half_step_rule():
    """A rule whose unit step halves the distance to the optimum of ``_Counting`` (so it never converges fast)."""

    class Half(GradientAscent):
        def prepare(self, stats: Statistics) -> None:
            self.scale = 0.25

    if "gradient_half" not in RULES:
        register_rule("gradient_half", lambda context: Half(context.objective))
    yield
    for name in ("gradient", "gradient_half", "descending"):
        RULES.pop(name, None)


def test_a_wide_designs_score_pass_is_predicted_from_the_kernel_measured_at_its_shape():
    """At d in the thousands the score's skinny GEMMs stream X far below the GEMM rate: the pass model takes the
    kernel's time measured at the data's (d, m) when it exceeds the flop model's (narrow designs keep the fitted
    flop model alone; how close the prediction comes is measured in benchmarks/real_designs.py, not asserted)."""
    from dmlr.steps.cost import pass_model, score_flops

    d, m, rows = 2_000, 4, 6_000
    model = pass_model(DataFacts(n_rows=rows, n_columns=d, n_nonbase=m, task_rows=rows, on_cluster=False))
    assert model.score_row > 0.0
    assert model.compute() == pytest.approx(rows * max(model.score_row, score_flops(d, m) / model.rate))
    narrow = pass_model(DataFacts(n_rows=rows, n_columns=20, n_nonbase=m, task_rows=rows, on_cluster=False))
    assert narrow.score_row == 0.0
    assert narrow.compute() == pytest.approx(rows * score_flops(20, m) / narrow.rate)
