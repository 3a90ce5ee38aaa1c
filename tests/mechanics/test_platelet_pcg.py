"""Matrix-free Q1 platelet solver (PCG) against the factorised sparse one: same discretisation, so the
strains agree to the CG tolerance; its adjoint and stiffness gradients against finite differences; the
operator contract both share."""

import numpy as np
import pytest
import torch

from mechanics.elasticity import PlateletLU, PlateletOperator, PlateletPCG
from mechanics.errors import InputError, SolverError


def _stiffness(c11=150.0, c22=120.0, c12=50.0, c66=45.0, angle_deg=0.0):
    c = np.zeros((2, 2, 2, 2))
    c[0, 0, 0, 0], c[1, 1, 1, 1] = c11, c22
    c[0, 0, 1, 1] = c[1, 1, 0, 0] = c12
    c[0, 1, 0, 1] = c[1, 0, 1, 0] = c[0, 1, 1, 0] = c[1, 0, 0, 1] = c66
    t = np.radians(angle_deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return np.einsum("ip,jq,kr,ls,pqrs->ijkl", r, r, r, r, c)


def _masks(n):
    y, x = np.mgrid[:n, :n] - n / 2 + 0.5
    ellipse = (x / (0.45 * n)) ** 2 + (y / (0.3 * n)) ** 2 < 1
    holed = (np.hypot(x, y) < 0.4 * n) & (np.hypot(x - 0.08 * n, y) > 0.12 * n)
    holed &= ~((x > 0.15 * n) & (abs(y) < 3))
    return {"ellipse": ellipse, "holed_notched": holed}


def _eigenstrain(n, n_rhs, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:n, :n] - n / 2
    e = np.zeros((n_rhs, n, n, 2, 2))
    e[..., 0, 0] = 0.05 * (x > 0.1 * y) + 0.01 * rng.normal(size=(n_rhs, n, n))
    e[..., 1, 1] = -0.02 * (y > 0)
    e[..., 0, 1] = e[..., 1, 0] = 0.004 * (x * y > 0)
    return e


@pytest.mark.parametrize("name", ["ellipse", "holed_notched"])
@pytest.mark.parametrize("angle", [0.0, 25.0])
@pytest.mark.parametrize("conv", [False, True], ids=["slices", "conv"])
def test_pcg_matches_sparse_lu(name, angle, conv):
    n = 48
    mask = _masks(n)[name]
    c = _stiffness(angle_deg=angle)
    eig = _eigenstrain(n, 3)
    ref = PlateletLU(mask, c, 12.0).apply(eig)
    pcg = PlateletPCG(mask, c, 12.0, rtol=1e-11, conv=conv)
    out = pcg.apply(eig)
    # same linear system; the tolerance is the CG stopping rule times the conditioning of the strain map
    assert np.abs(out - ref).max() <= 1e-8 * np.abs(ref).max()
    assert np.all(out[:, ~mask] == 0)


def test_iterations_do_not_grow_with_the_grid():
    """The fictitious-domain FFT preconditioner makes the iteration count nearly grid independent
    (measured 30–34 from 64² to 512²); a Jacobi-preconditioned CG would grow ~ n."""
    counts = []
    for n in (32, 128):
        pcg = PlateletPCG(_masks(n)["ellipse"], _stiffness(angle_deg=25.0), 10.0, rtol=1e-9)
        pcg.apply(_eigenstrain(n, 1))
        counts.append(int(pcg.iterations.max()))
    assert counts[1] <= 1.3 * counts[0] + 5, counts


def test_adjoint_is_exact_transpose():
    n = 32
    mask = _masks(n)["holed_notched"]
    pcg = PlateletPCG(mask, _stiffness(angle_deg=40.0), 5.0, rtol=1e-12)
    rng = np.random.default_rng(3)
    e = rng.normal(size=(2, n, n, 2, 2))
    g = rng.normal(size=(2, n, n, 2, 2))
    lhs = np.sum(pcg.apply(e) * g)
    rhs = np.sum(e * pcg.apply_adjoint(g))
    assert lhs == pytest.approx(rhs, rel=1e-9)


@pytest.mark.parametrize("conv", [False, True], ids=["slices", "conv"])
def test_gradients_of_eigenstrain_and_material_weights(conv):
    """Implicit-adjoint gradients against central differences along random directions (exact for the
    eigenstrain, which enters linearly; O(h²) for the material weights)."""
    n = 12
    y, x = np.mgrid[:n, :n] - 5.5
    mask = np.hypot(x, y) < 5.6
    c_a, c_b = _stiffness(angle_deg=20.0), _stiffness(c11=200.0, c22=90.0, angle_deg=20.0)
    pcg = PlateletPCG(mask, np.stack([c_a, c_b]), 3.0, rtol=1e-13, conv=conv)
    rng = np.random.default_rng(1)
    eig = torch.tensor(rng.normal(size=(2, n, n, 2, 2)) * 0.01)
    eig = (eig + eig.transpose(-1, -2)).requires_grad_()
    w = torch.tensor(rng.random((2, n, n)) + 0.1).requires_grad_()
    probe = torch.tensor(rng.normal(size=(2, n, n, 2, 2)))

    def loss(e, s):
        return (pcg.strain(e, stiffness_scale=s) * probe).sum()

    loss(eig, w).backward()
    for tensor, grad in ((eig, eig.grad), (w, w.grad)):
        v = torch.tensor(rng.normal(size=tensor.shape))
        h = 1e-5
        with torch.no_grad():
            tensor += h * v
            up = loss(eig, w).item()
            tensor -= 2 * h * v
            down = loss(eig, w).item()
            tensor += h * v
        assert (grad * v).sum().item() == pytest.approx((up - down) / (2 * h), rel=1e-6)


def test_material_weights_select_and_scale_the_stiffness():
    n = 24
    mask = _masks(n)["ellipse"]
    c_a, c_b = _stiffness(), _stiffness(c11=210.0, c22=95.0, c12=30.0, c66=60.0)
    eig = torch.as_tensor(_eigenstrain(n, 1))
    pcg = PlateletPCG(mask, np.stack([c_a, c_b]), 8.0, rtol=1e-12)
    only_b = torch.stack([torch.zeros(n, n), torch.ones(n, n)]).double()
    ref_b = PlateletLU(mask, c_b, 8.0).apply(eig.numpy())
    assert np.abs(pcg.strain(eig, stiffness_scale=only_b).numpy() - ref_b).max() < 1e-9
    # a free body with uniform stiffness: the strain does not depend on the stiffness scale
    ref_a = PlateletLU(mask, c_a, 8.0).apply(eig.numpy())
    scaled = torch.stack([torch.full((n, n), 3.0), torch.zeros(n, n)]).double()
    assert np.abs(pcg.strain(eig, stiffness_scale=scaled).numpy() - ref_a).max() < 1e-9


@pytest.mark.parametrize("solver", [PlateletLU, PlateletPCG], ids=["lu", "pcg"])
def test_bad_inputs_are_refused_naming_the_field(solver):
    """Every malformed argument is an InputError (CLI exit 2) that names it, for both operators."""
    mask = _masks(16)["ellipse"]
    cases = [
        ("stiffness_2d", lambda: solver(mask, np.zeros((3, 3)), 1.0)),
        ("stiffness_2d", lambda: solver(mask, np.full((2, 2, 2, 2), np.nan), 1.0)),
        ("mask", lambda: solver(np.zeros((4, 4), bool), _stiffness(), 1.0)),
        ("mask", lambda: solver(np.ones((2, 4, 4), bool), _stiffness(), 1.0)),
        ("spacing_nm", lambda: solver(mask, _stiffness(), 0.0)),
        ("spacing_nm", lambda: solver(mask, _stiffness(), "wide")),
        ("weights", lambda: solver(mask, _stiffness(), 1.0, weights=np.ones((3, 3)))),
        ("weights", lambda: solver(mask, _stiffness(), 1.0, weights=np.zeros((16, 16)))),
        ("eigenstrain", lambda: solver(mask, _stiffness(), 1.0).solve(torch.zeros(16, 16, 2, 2))),
        ("eigenstrain", lambda: solver(mask, _stiffness(), 1.0).strain(torch.zeros(1, 15, 16, 2, 2))),
    ]
    if solver is PlateletPCG:
        cases += [
            ("rtol", lambda: PlateletPCG(mask, _stiffness(), 1.0, rtol=0.0)),
            ("rtol", lambda: PlateletPCG(mask, _stiffness(), 1.0).solve(torch.zeros(1, 16, 16, 2, 2),
                                                                        rtol=-1.0)),
            ("max_iter", lambda: PlateletPCG(mask, _stiffness(), 1.0, max_iter=0)),
            ("dtype", lambda: PlateletPCG(mask, _stiffness(), 1.0, dtype=torch.int64)),
            ("device", lambda: PlateletPCG(mask, _stiffness(), 1.0, device="no-such-device")),
            ("stiffness_scale", lambda: PlateletPCG(mask, _stiffness(), 1.0).strain(
                torch.zeros(1, 16, 16, 2, 2), stiffness_scale=torch.ones(3, 3))),
        ]
    for field, make in cases:
        with pytest.raises(InputError) as err:
            make()
        assert err.value.field == field, (field, str(err.value))


def test_non_convergence_is_a_solver_error():
    """A solve that reaches max_iter raises SolverError (CLI exit 1), a RuntimeError, with one line that
    names the solver, the tolerance and the residual reached."""
    mask = _masks(16)["ellipse"]
    slow = PlateletPCG(mask, _stiffness(), 1.0, rtol=1e-12, max_iter=2)
    for solve in (lambda: slow.apply(_eigenstrain(16, 1)), lambda: slow.apply(_eigenstrain(16, 2))):
        expected = r"PlateletPCG: .*did not reach rtol=1e-12 in 2 iterations"
        with pytest.raises(SolverError, match=expected) as err:
            solve()
        assert isinstance(err.value, RuntimeError) and "\n" not in str(err.value)


@pytest.mark.parametrize("solver", [PlateletLU, PlateletPCG], ids=["lu", "pcg"])
def test_operator_contract(solver):
    """Both implementations satisfy PlateletOperator the same way: attributes, tensors in and out on the
    input's dtype and device (``solve``), autograd through ``strain`` equal to ``apply_adjoint``, and the
    construction weights used by every entry point (also by ``strain``, which once dropped them on
    the PCG path)."""
    n = 24
    mask = _masks(n)["holed_notched"]
    rng = np.random.default_rng(5)
    weights = np.where(mask, rng.uniform(0.1, 1.0, mask.shape), 0.0)
    op: PlateletOperator = solver(mask, _stiffness(angle_deg=15.0), 4.0, weights=weights,
                                  **({"rtol": 1e-12} if solver is PlateletPCG else {}))
    ref = PlateletLU(mask, _stiffness(angle_deg=15.0), 4.0, weights=weights).apply(_eigenstrain(n, 2))
    assert op.mask.dtype == bool and op.shape == (n, n) and op.spacing_nm == 4.0
    assert op.device.type == "cpu" and op.dtype == torch.float64
    eig = torch.as_tensor(_eigenstrain(n, 2))
    for _ in range(2):  # the second pass checks that nothing was reconfigured by the first
        out = op.solve(eig.float())
        assert out.dtype == torch.float32 and out.shape == eig.shape
        x = eig[:1].clone().requires_grad_(True)
        strain = op.strain(x)
        probe = torch.as_tensor(rng.normal(size=(1, n, n, 2, 2)))
        (strain * probe).sum().backward()
        assert np.abs(strain.detach().numpy() - ref[:1]).max() <= 1e-8 * np.abs(ref).max()
        assert np.abs(op.apply(eig.numpy()) - ref).max() <= 1e-8 * np.abs(ref).max()
        np.testing.assert_allclose(x.grad.numpy(), op.apply_adjoint(probe.numpy()), rtol=0,
                                   atol=1e-8 * np.abs(x.grad.numpy()).max())
    work = op.work()
    assert all(isinstance(v, int) for v in work.values())
    assert (work["pcg_solves"] > 0) if solver is PlateletPCG else work == {}


def test_convolution_and_slice_forms_of_the_operator_agree():
    """The two forms of the element operators (2×2 convolutions, array slices) are the same linear maps:
    gather, scatter, stiffness with two materials mixed per element, and a whole solve."""
    n = 30
    mask = _masks(n)["holed_notched"]
    c = np.stack([_stiffness(angle_deg=15.0), _stiffness(c11=210.0, c22=95.0, angle_deg=15.0)])
    rng = np.random.default_rng(7)
    weights = rng.random((2, n, n)) + 0.05
    pcgs = {conv: PlateletPCG(mask, c, 4.0, rtol=1e-12, weights=weights, conv=conv) for conv in (False, True)}
    hh, ww = pcgs[True]._crop_shape
    u = torch.tensor(rng.normal(size=(3, 2, hh + 1, ww + 1)))
    fe = torch.tensor(rng.normal(size=(3, 8, hh, ww)))
    eig = _eigenstrain(n, 2, seed=2)
    out = {}
    for conv, pcg in pcgs.items():
        assert pcg.use_conv == conv
        out[conv] = (pcg._gather(u), pcg._scatter(fe), pcg._matvec(u, pcg._escale), pcg.apply(eig))
    for a, b in zip(out[False], out[True]):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 1e-12 * np.abs(a).max()
    assert PlateletPCG(mask, c[0], 4.0).use_conv  # a small CPU grid takes the convolutions by default


def test_one_cg_iteration_launches_few_kernels():
    """On a GPU a single-particle solve is bound by kernel launches, not arithmetic, so the number of
    non-view torch operations per CG iteration is the figure of merit there (counted here on the CPU:
    dispatch does not depend on the device). Convolution form: 2 convolutions, 2 FFTs, the FFT pad, the
    symbol product and its sum, the mask, 2 dots, 3 axpy and 2 divisions = 15, plus the residual check
    every 4 iterations; the slice form needs 26."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                self.kernels += 1
            return func(*args, **(kwargs or {}))

    n = 24
    mask = _masks(n)["ellipse"]
    eig = torch.as_tensor(_eigenstrain(n, 1))
    per_iteration = {}
    for conv in (True, False):
        pcg = PlateletPCG(mask, _stiffness(angle_deg=30.0), 5.0, rtol=1e-10, conv=conv)
        counts = []
        for rtol in (1e-3, 1e-10):  # two solves of different length: the difference is iterations only
            with Count() as c:
                pcg.solve(eig, rtol=rtol)
            counts.append((c.kernels, int(pcg.iterations[0])))
        (k0, i0), (k1, i1) = counts
        assert i1 >= i0 + 8
        per_iteration[conv] = (k1 - k0) / (i1 - i0)
    assert per_iteration[True] <= 17, per_iteration
    assert per_iteration[False] <= 28, per_iteration


def test_single_rhs_recurrences_match_the_batched_loop():
    """One right-hand side takes the plain recurrences, several the masked batched loop: same answer."""
    n = 40
    mask = _masks(n)["holed_notched"]
    pcg = PlateletPCG(mask, _stiffness(angle_deg=10.0), 7.0, rtol=1e-11)
    eig = _eigenstrain(n, 2, seed=4)
    both = pcg.apply(eig)
    one = pcg.apply(eig[1:])
    assert np.abs(one - both[1:]).max() <= 1e-8 * np.abs(both).max()


def test_element_weights_match_between_solvers_and_keep_closed_forms():
    """Per-element stiffness weights (partial-coverage rim elements): the ``weights`` of the sparse LU
    and of the PCG assemble the same system. Closed forms that hold for any weights:
    a uniform eigenstrain is compatible, so the free body takes it as its strain with zero stress; and
    scaling every weight by one factor leaves the strain unchanged (it is homogeneous of degree 0 in C)."""
    n = 40
    mask = _masks(n)["ellipse"]
    c = _stiffness(angle_deg=25.0)
    rng = np.random.default_rng(3)
    weights = np.where(mask, rng.uniform(0.05, 1.0, mask.shape), 0.0)
    eig = _eigenstrain(n, 2)
    lu = PlateletLU(mask, c, 9.0, weights=weights)
    pcg = PlateletPCG(mask, c, 9.0, rtol=1e-12, weights=weights)
    ref = lu.apply(eig)
    assert np.abs(pcg.apply(eig) - ref).max() <= 1e-8 * np.abs(ref).max()
    scaled = PlateletLU(mask, c, 9.0, weights=3.7 * weights).apply(eig)
    assert np.abs(scaled - ref).max() <= 1e-10 * np.abs(ref).max()  # round-off of the factorisation
    uniform = np.zeros((1, n, n, 2, 2))
    uniform[..., :, :] = [[0.031, -0.004], [-0.004, -0.017]]
    strain = lu.apply(uniform)[0]
    assert np.abs(strain[mask] - uniform[0][mask]).max() < 1e-12
    assert np.abs(lu.stress(torch.as_tensor(strain), torch.as_tensor(uniform[0])).numpy()).max() < 1e-9
    with pytest.raises(InputError, match="weights: expected shape"):
        PlateletLU(mask, c, 9.0, weights=weights[:-1])
    with pytest.raises(InputError, match="> 0 on every mask pixel"):
        PlateletLU(mask, c, 9.0, weights=np.where(mask, 0.0, 1.0))


@pytest.mark.parametrize("n_rhs", [1, 3])
def test_convergence_is_checked_every_k_iterations(n_rhs):
    """With check_every = K the residual (a host sync) is read every K iterations only: the solve takes
    a multiple of K iterations (or stops at the first multiple of K past convergence) and the strain equals
    the every-iteration-checked solve to the tolerance (both are converged CG iterates: 1e-8 relative)."""
    mask = _masks(16)["ellipse"]
    eps = _eigenstrain(16, n_rhs)
    every = PlateletPCG(mask, _stiffness(angle_deg=25.0), 4.0, rtol=1e-10, check_every=1)
    sparse = PlateletPCG(mask, _stiffness(angle_deg=25.0), 4.0, rtol=1e-10, check_every=10)
    a, b = every.apply(eps), sparse.apply(eps)
    need = int(every.iterations.max())
    took = int(sparse.iterations.max())
    assert need <= took < need + 10
    if n_rhs == 1:
        assert took % 10 == 0
    assert np.abs(b - a).max() <= 1e-8 * np.abs(a).max()
    with pytest.raises(InputError) as err:
        PlateletPCG(mask, _stiffness(), 1.0, check_every=0)
    assert err.value.field == "check_every"
