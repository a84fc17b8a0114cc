"""The crop geometry: one similarity transform, exact round trips, pixel-centre convention."""
import numpy as np
import pytest

from lightmark.core import geometry


def test_crop_fills_output_edge_to_edge() -> None:
    # A 40-px square centred on (100, 50) maps onto a 20-px crop: its outer edges land on the crop's
    # outer pixel edges (-0.5 and 19.5), its centre on the crop centre (9.5).
    m = geometry.crop_matrix((100, 50), 40, 20)
    pts = np.array([[80.0, 30.0], [120.0, 70.0], [100.0, 50.0]])
    assert np.allclose(geometry.apply_affine(pts, m), [[-0.5, -0.5], [19.5, 19.5], [9.5, 9.5]])


@pytest.mark.parametrize("angle,flip", [(0, False), (33, False), (-70, True)])
def test_inverse_round_trip(angle: float, flip: bool) -> None:
    rng = np.random.default_rng(0)
    m = geometry.crop_matrix(rng.uniform(0, 300, 2), rng.uniform(20, 200), 128, angle, flip)
    pts = rng.uniform(0, 300, (68, 2))
    back = geometry.apply_affine(geometry.apply_affine(pts, m), geometry.invert_affine(m))
    assert np.allclose(back, pts, atol=1e-9)
    assert np.allclose(geometry.compose_affine(geometry.invert_affine(m), m),
                       [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_rotation_direction_and_flip() -> None:
    # +90 degrees: the content appears turned counter-clockwise on screen, so a point right of
    # the centre lands above it (smaller y; y points down).
    m = geometry.crop_matrix((0, 0), 2, 2, angle_deg=90)
    p = geometry.apply_affine(np.array([[1.0, 0.0]]), m)[0] - 0.5
    assert np.allclose(p, [0, -1], atol=1e-9)
    mf = geometry.crop_matrix((0, 0), 2, 2, flip=True)
    a, b = geometry.apply_affine(np.array([[-0.5, 0.0], [0.5, 0.0]]), mf)
    assert a[0] > b[0], "a mirrored crop swaps left and right"


def test_pixels_and_points_move_together() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    image[40, 100] = 255
    m = geometry.crop_matrix((90, 50), 60, 60, angle_deg=20)
    crop = geometry.warp_image(image, m, 60)
    w = crop[..., 0].astype(float)
    ys, xs = np.mgrid[:60, :60]
    centroid = np.array([(w * xs).sum(), (w * ys).sum()]) / w.sum()
    assert np.allclose(centroid, geometry.apply_affine(np.array([[100.0, 40.0]]), m)[0], atol=0.05)


def test_boxes_and_batch_crops_round_trip() -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 90, 120], [150, 30, 260, 170]], float)
    crops, mats = geometry.crops_from_boxes(image, boxes, 64)
    assert crops.shape == (2, 64, 64, 3) and mats.shape == (2, 2, 3)
    centre_crop = np.full((2, 68, 2), 31.5)
    back = geometry.points_to_image(centre_crop, mats)
    assert np.allclose(back[0, 0], [50, 70]) and np.allclose(back[1, 0], [205, 100])
    empty_crops, empty_mats = geometry.crops_from_boxes(image, np.zeros((0, 4)), 64)
    assert empty_crops.shape == (0, 64, 64, 3)


@pytest.mark.parametrize("box", [(0, 0, 0, 10), (5, 5, 1, 10), (0, 0, np.nan, 4), (1, 2, 3)])
def test_bad_boxes_are_refused(box) -> None:
    with pytest.raises(ValueError, match="box"):
        geometry.as_box(box)


def test_landmark_box_and_square() -> None:
    pts = np.array([[10, 20], [50, 40], [30, 90]], float)
    assert np.allclose(geometry.landmark_box(pts), [10, 20, 50, 90])
    centre, side = geometry.square_from_box([10, 20, 50, 90], scale=1.25, shift=(0.1, 0))
    assert np.allclose(centre, [34, 55]) and side == pytest.approx(87.5)


@pytest.mark.parametrize("centre", [(300.0, 250.0), (20.0, 480.0), (590.0, 5.0), (-900.0, 100.0)])
def test_shrinking_crop_blurs_only_what_it_reads(centre, monkeypatch):
    # The pre-blur of a strong down-scale runs on the region the crop reads; the crop must be what
    # blurring the whole photo first gives (interior, photo edges, off-photo), up to warpAffine's
    # fixed-point rounding of the shifted matrix: 1 of 255 on a rare pixel. (Scale 0.128 would
    # take the block-average path of shrinks beyond 4x; this checks the Gaussian path itself.)
    import cv2

    monkeypatch.setattr(geometry, "BOX_SHRINK_BELOW", 0.0)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (500, 600, 3), dtype=np.uint8)
    m = geometry.crop_matrix(centre, 500.0, 64, angle_deg=17.0)  # scale 0.128: blurred
    scale = 64 / 500
    sigma = 0.25 / scale
    k = int(2 * round(3 * sigma) + 1)
    ref = cv2.warpAffine(cv2.GaussianBlur(image, (k, k), sigma), m, (64, 64), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    got = geometry.warp_image(image, m, 64)
    assert ref.std() > 0 or centre[0] < 0
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_invert_affine_batches_and_refuses_singular():
    ms = np.stack([geometry.crop_matrix((10.0 * i, 5.0), 40.0 + i, 32, angle_deg=30.0 * i) for i in range(4)])
    inv = geometry.invert_affine(ms)
    for m, i in zip(ms, inv):
        np.testing.assert_allclose(geometry.compose_affine(i, m), np.eye(3)[:2], atol=1e-12)
    with pytest.raises(ValueError, match="singular"):
        geometry.invert_affine(np.zeros((2, 3)))


@pytest.mark.parametrize("side", [600.0, 1500.0, 2800.0])
def test_large_shrink_block_averages_like_the_gaussian(side):
    # Beyond a 4x shrink the crop averages f x f blocks before a smaller Gaussian: on a photo-like
    # (smooth) image the crop stays within a grey level or two of the full Gaussian's.
    import cv2

    rng = np.random.default_rng(1)
    image = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (4000, 3000),
                       interpolation=cv2.INTER_CUBIC)
    image = cv2.add(image, rng.integers(0, 12, image.shape, dtype=np.uint8))  # fine grain to filter
    m = geometry.crop_matrix((2100.0, 1400.0), side, 128)
    assert 128 / side < geometry.BOX_SHRINK_BELOW
    got = geometry.warp_image(image, m, 128)
    scale = 128 / side
    sigma = 0.25 / scale
    k = int(2 * round(3 * sigma) + 1)
    region, mm = geometry._region_read(image, m, 128, k // 2 + 2)
    ref = cv2.warpAffine(cv2.GaussianBlur(region, (k, k), sigma), mm, (128, 128), flags=cv2.INTER_LINEAR)
    diff = np.abs(got.astype(int) - ref.astype(int))
    assert ref.std() > 5  # the crop shows structure, so the comparison means something
    assert diff.mean() < 0.5 and diff.max() <= 3
