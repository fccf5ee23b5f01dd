"""The CPU Gaussian rasterizer against analytic footprints, hand-computed compositing and gsplat."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_scenes import synthetic_prediction

from da3core.render import cpu_rasterizer, render_gaussians
from da3core.render.sh import eval_sh, sh_basis

W, H = 64, 48
K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])


def render(means, scales, opacities, colors, render_mode="RGB", backgrounds=None, quats=None):
    """Render from the identity camera with K; colours are post-activation (no SH)."""
    n = len(means)
    out, alpha, meta = cpu_rasterizer.rasterization(
        means=torch.tensor(np.asarray(means), dtype=torch.float32),
        scales=torch.tensor(np.asarray(scales), dtype=torch.float32),
        quats=torch.tensor(quats if quats is not None else np.tile([1.0, 0, 0, 0], (n, 1)), dtype=torch.float32),
        opacities=torch.tensor(opacities, dtype=torch.float32),
        colors=torch.tensor(colors, dtype=torch.float32),
        viewmats=torch.eye(4)[None],
        Ks=torch.tensor(K, dtype=torch.float32)[None],
        width=W,
        height=H,
        render_mode=render_mode,
        backgrounds=None if backgrounds is None else torch.tensor([backgrounds]).float(),
    )
    return out[0].numpy(), alpha[0, ..., 0].numpy(), meta


def analytic_footprint(mean, scale, opacity):
    """alpha(pixel) of one isotropic Gaussian: EWA covariance J (s^2 I) J^T + 0.3 I, pixel centres at +0.5."""
    x, y, z = mean
    jac = np.array([[K[0, 0] / z, 0, -K[0, 0] * x / z**2], [0, K[1, 1] / z, -K[1, 1] * y / z**2]])
    cov = scale**2 * jac @ jac.T + 0.3 * np.eye(2)
    centre = np.array([K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]])
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([cols - centre[0], rows - centre[1]], -1)
    alpha = np.minimum(0.999, opacity * np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)))
    return np.where(alpha >= 1 / 255, alpha, 0.0), centre


def test_single_gaussian_centre_and_footprint_are_the_analytic_2d_gaussian():
    mean, scale, opacity = np.array([0.1, -0.05, 2.0]), 0.04, 0.8
    image, alpha, meta = render([mean], [[scale] * 3], [opacity], [[1.0, 0.0, 0.0]])
    expected, centre = analytic_footprint(mean, scale, opacity)
    np.testing.assert_allclose(meta["means2d"][0, 0].numpy(), centre, atol=1e-5)
    np.testing.assert_allclose(alpha, expected, atol=2e-6)
    np.testing.assert_allclose(image[..., 0], expected, atol=2e-6)
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    centroid = np.array([(alpha * cols).sum(), (alpha * rows).sum()]) / alpha.sum()
    np.testing.assert_allclose(centroid, centre, atol=0.02)


def test_rotated_anisotropic_gaussian_footprint():
    angle = np.deg2rad(30)
    quat = [np.cos(angle / 2), 0, 0, np.sin(angle / 2)]  # 30 degrees about the optical axis
    mean, scales = np.array([0.0, 0.0, 2.0]), np.array([0.2, 0.04, 0.04])
    _, alpha, _ = render([mean], [scales], [0.9], [[1.0, 1, 1]], quats=[quat])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cov = (K[0, 0] / 2) ** 2 * rot @ np.diag(scales[:2] ** 2) @ rot.T + 0.3 * np.eye(2)
    cols, rows = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    d = np.stack([cols - 32, rows - 24], -1)
    expected = np.minimum(0.999, 0.9 * np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov), d)))
    np.testing.assert_allclose(alpha, np.where(expected >= 1 / 255, expected, 0), atol=2e-6)


@pytest.mark.parametrize("order", [[0, 1], [1, 0]])
def test_nearer_gaussian_is_composited_first_whatever_the_input_order(order):
    means = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]])[order]
    colors = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])[order]
    scales = np.array([[0.2] * 3, [0.3] * 3])[order]  # both 10 px wide on screen
    image, alpha, _ = render(means, scales, [0.9, 0.9], colors, render_mode="RGB+ED")
    centre = image[24, 32]  # pixel centre (32.5, 24.5): both Gaussians are ~0.9 opaque there
    a_near = min(0.999, 0.9 * np.exp(-0.5 * 0.5**2 / ((0.2 * 50) ** 2 + 0.3) * 2))
    a_far = min(0.999, 0.9 * np.exp(-0.5 * 0.5**2 / ((0.3 * 100 / 3) ** 2 + 0.3) * 2))
    np.testing.assert_allclose(centre[:3], [a_near, (1 - a_near) * a_far, 0], atol=1e-5)
    expected_depth = (a_near * 2 + (1 - a_near) * a_far * 3) / (a_near + (1 - a_near) * a_far)
    np.testing.assert_allclose(centre[3], expected_depth, rtol=1e-5)


def test_alpha_compositing_matches_a_hand_computation():
    # Three wide Gaussians centred on pixel (32, 24)'s centre: alpha there is exactly each opacity.
    means = [[0.005 * z, 0.005 * z, z] for z in (1.0, 2.0, 3.0)]
    colors = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]
    scales = [[z] * 3 for z in (1.0, 2.0, 3.0)]
    image, alpha, _ = render(means, scales, [0.5, 0.6, 0.7], colors, backgrounds=[0.2, 0.4, 0.6])
    t = [1.0, 0.5, 0.5 * 0.4, 0.5 * 0.4 * 0.3]
    expected = np.array([0.5 * t[0], 0.6 * t[1], 0.7 * t[2]]) + t[3] * np.array([0.2, 0.4, 0.6])
    np.testing.assert_allclose(image[24, 32], expected, atol=1e-5)
    np.testing.assert_allclose(alpha[24, 32], 1 - t[3], atol=1e-6)


def test_compositing_stops_before_the_gaussian_that_saturates_the_pixel():
    means = [[0.005 * z, 0.005 * z, z] for z in (1.0, 2.0)]
    image, alpha, _ = render(means, [[1.0] * 3, [2.0] * 3], [0.999, 0.999], [[1.0, 0, 0], [0, 1.0, 0]])
    # After the first Gaussian T = 1e-3; the second would leave 1e-6 <= 1e-4, so it is skipped (gsplat's rule).
    np.testing.assert_allclose(image[24, 32], [0.999, 0, 0], atol=1e-6)
    np.testing.assert_allclose(alpha[24, 32], 0.999, atol=1e-6)


def test_culled_gaussians_leave_the_image_empty():
    means = [[0.0, 0.0, 0.005], [0.0, 0.0, -2.0], [50.0, 0.0, 2.0]]  # before near plane, behind, off-screen
    image, alpha, meta = render(means, [[0.1] * 3] * 3, [0.9] * 3, [[1.0, 1, 1]] * 3)
    assert not alpha.any() and not image.any()
    assert not meta["radii"].any()


def test_sh_matches_gsplats_reference_evaluation_and_is_orthonormal():
    from gsplat.cuda._torch_impl import _spherical_harmonics  # gsplat's own CPU reference code

    rng = np.random.default_rng(0)
    dirs = torch.tensor(rng.normal(size=(100, 3)), dtype=torch.float64)
    coeffs = torch.tensor(rng.normal(size=(100, 9, 3)), dtype=torch.float64)
    for degree in (0, 1, 2):
        torch.testing.assert_close(eval_sh(degree, dirs, coeffs), _spherical_harmonics(degree, dirs, coeffs))
    # Orthonormal basis: Monte Carlo integral of Y_i Y_j over the sphere is the identity.
    unit = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(400_000, 3))), dim=-1)
    values = sh_basis(2, unit)
    gram = 4 * np.pi * (values.T @ values / len(unit)).numpy()
    np.testing.assert_allclose(gram, np.eye(9), atol=0.02)


def random_scene(n: int = 300, seed: int = 0):
    """Random Gaussians in front of a tilted camera, as float32 tensors, plus the camera."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g) * torch.tensor([0.6, 0.4, 0.5]) + torch.tensor([0.0, 0.0, 3.0])
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.08 + 0.01
    opacities = torch.rand(n, generator=g)
    sh = torch.randn(n, 9, 3, generator=g) * 0.4
    angle = 0.2
    viewmat = torch.eye(4)
    viewmat[:3, :3] = torch.tensor([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    viewmat[:3, 3] = torch.tensor([0.3, -0.1, 0.2])
    Ks = torch.tensor([[90.0, 0, 30], [0, 95.0, 26], [0, 0, 1]])[None]
    return dict(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=sh,
        viewmats=viewmat[None],
        Ks=Ks,
        width=W,
        height=H,
        sh_degree=2,
    )


def test_projection_matches_gsplats_reference_projection():
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    s = random_scene()
    covars, _ = _quat_scale_to_covar_preci(s["quats"], s["scales"], True, False, triu=False)
    torch.testing.assert_close(cpu_rasterizer.quat_scale_to_covar(s["quats"], s["scales"]), covars)
    radii, means2d, depths, conics, _ = _fully_fused_projection(s["means"], covars, s["viewmats"], s["Ks"], W, H)
    ours = cpu_rasterizer.project(s["means"], covars, s["opacities"], s["viewmats"][0], s["Ks"][0], W, H)
    shown = (ours["radii"] > 0).all(-1)
    assert shown.sum() > 100 and bool(((radii[0] > 0).all(-1) | ~shown).all())
    torch.testing.assert_close(ours["means2d"][shown], means2d[0][shown])
    torch.testing.assert_close(ours["depths"], depths[0])
    torch.testing.assert_close(ours["conics"][shown], conics[0][shown], rtol=1e-4, atol=1e-6)


def sequential_composite(proj, values, opacities, width, height):
    """gsplat's per-pixel loop written plainly: every pixel walks all Gaussians front to back, float64."""
    shown = torch.nonzero((proj["radii"] > 0).all(-1)).squeeze(1)
    order = shown[torch.argsort(proj["depths"][shown], stable=True)].tolist()
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    trans, done = np.ones((height, width)), np.zeros((height, width), bool)
    out = np.zeros((height, width, values.shape[1]))
    for g in order:
        (mx, my), (a, b, c) = proj["means2d"][g].double().numpy(), proj["conics"][g].double().numpy()
        dx, dy = mx - cols, my - rows
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = np.minimum(0.999, float(opacities[g]) * np.exp(-sigma))
        hit = (sigma >= 0) & (alpha >= 1 / 255) & ~done
        after = trans * (1 - alpha)
        stop = hit & (after <= 1e-4)
        use = hit & ~stop
        out += np.where(use, alpha * trans, 0)[..., None] * values[g].double().numpy()
        trans, done = np.where(use, after, trans), done | stop
    return out, 1 - trans, done


@pytest.mark.parametrize("tile", [4, 8, 16])
def test_tiled_batched_compositing_equals_the_sequential_per_pixel_loop(tile):
    # An odd-sized image (partial border tiles), overlapping Gaussians that saturate pixels, and tiny batches
    # and depth chunks so that tiles need many rounds and culling runs between chunks.
    s = random_scene(1500, seed=3)
    width, height = 70, 45
    covars = cpu_rasterizer.quat_scale_to_covar(s["quats"], s["scales"])
    proj = cpu_rasterizer.project(s["means"], covars, s["opacities"], s["viewmats"][0], s["Ks"][0], width, height)
    values = torch.cat([torch.rand(1500, 3, generator=torch.Generator().manual_seed(0)), proj["depths"][:, None]], 1)
    image, alpha = cpu_rasterizer.composite(proj, values, s["opacities"], width, height, tile, batch=3, first_chunk=50)
    expected, expected_alpha, stopped = sequential_composite(proj, values, s["opacities"], width, height)
    assert 0.05 < stopped.mean() < 0.9  # some pixels stopped early, some did not
    np.testing.assert_allclose(alpha.numpy(), expected_alpha, atol=2e-5)
    np.testing.assert_allclose(image.numpy(), expected, atol=2e-5 * np.abs(expected).max())


def test_cameras_render_in_parallel_like_one_at_a_time_and_threads_are_restored():
    s = random_scene(400, seed=2)
    shifts = torch.tensor([0.0, 0.1, -0.15])  # sideways camera moves
    viewmats = s["viewmats"].repeat(3, 1, 1)
    viewmats[:, 0, 3] += shifts
    s.update(viewmats=viewmats, Ks=s["Ks"].repeat(3, 1, 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        together, _, _ = cpu_rasterizer.rasterization(**s, render_mode="RGB+ED")
        assert torch.get_num_threads() == 2
        alone = [
            cpu_rasterizer.rasterization(
                **{**s, "viewmats": s["viewmats"][i : i + 1], "Ks": s["Ks"][i : i + 1]}, render_mode="RGB+ED"
            )[0]
            for i in range(3)
        ]
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(together, torch.cat(alone), rtol=0, atol=0)


def test_rendering_pixel_gaussians_reproduces_the_view():
    prediction, capture = synthetic_prediction(n_views=2, width=160, height=120, gaussians=True)
    # The Gaussians sit on integer pixel centres, the renderer samples at +0.5: shift K by half a pixel.
    K = capture.intrinsics[:1] + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]])
    color, depth = render_gaussians(prediction.gaussians, capture.extrinsics[:1], K, 120, 160, progress=False)
    # Each pixel also sees its neighbours' Gaussians, so compare where the 5x5 neighbourhood has one colour.
    image = capture.images[0].astype(int)
    flat = np.ones(image.shape[:2], bool)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            flat &= (np.roll(image, (dy, dx), axis=(0, 1)) == image).all(-1)
    flat[:2], flat[-2:], flat[:, :2], flat[:, -2:] = False, False, False, False
    assert flat.sum() > 100
    np.testing.assert_allclose(color[0][flat] * 255, image[flat], atol=3)
    # Expected depth also mixes the neighbours' (front ones weigh more, so it reads slightly near).
    np.testing.assert_allclose(np.median(depth[0] / capture.depth[0]), 1.0, atol=0.015)


@pytest.mark.gpu
@pytest.mark.parametrize("tile_size", [None, 8, 16])
def test_cpu_rasterizer_matches_gsplat_on_cuda(tile_size):
    from gsplat import rasterization

    s = random_scene(2000, seed=1)
    cpu, cpu_alpha, _ = cpu_rasterizer.rasterization(
        **s, render_mode="RGB+ED", backgrounds=torch.zeros(1, 3), tile_size=tile_size
    )
    cuda = {k: v.cuda() if torch.is_tensor(v) else v for k, v in s.items()}
    gpu, gpu_alpha, _ = rasterization(
        **cuda, render_mode="RGB+ED", backgrounds=torch.zeros(1, 3, device="cuda"), packed=False
    )
    torch.testing.assert_close(cpu_alpha, gpu_alpha.cpu(), atol=2e-3, rtol=0)
    torch.testing.assert_close(cpu[..., :3], gpu[..., :3].cpu(), atol=2e-3, rtol=0)
    shown = cpu_alpha[..., 0] > 0.5
    torch.testing.assert_close(cpu[..., 3][shown], gpu[..., 3].cpu()[shown], rtol=1e-3, atol=1e-3)


def test_precomputed_covariances_replace_quats_and_scales_as_in_gsplat():
    s = random_scene(400, seed=4)
    covars = cpu_rasterizer.quat_scale_to_covar(s["quats"], s["scales"])
    expected, _, _ = cpu_rasterizer.rasterization(**s, render_mode="RGB+ED")
    ignored = {"quats": torch.zeros_like(s["quats"]), "scales": torch.zeros_like(s["scales"])}
    given, _, _ = cpu_rasterizer.rasterization(**{**s, **ignored}, covars=covars, render_mode="RGB+ED")
    assert expected[..., 3].gt(0).sum() > 500
    torch.testing.assert_close(given, expected, rtol=0, atol=0)
