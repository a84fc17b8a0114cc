"""A vectorised numpy z-buffer rasteriser for small triangles.

Meshes here are dense (tens of thousands of triangles of a pixel or two each at 256 px), so a
per-triangle Python loop is too slow. Instead all triangles are scan-converted at once: one array
entry per (triangle, pixel row) gives the row's span from the edge crossings, then one entry per
covered pixel centre; the nearest candidate per pixel wins (a sort, not a scatter loop). Coordinates are 0-based pixel centres, as everywhere in lightmark.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from lightmark.core.errors import RasterError




@dataclass
class Raster:
    """The visible surface: per pixel the triangle id (-1: empty), barycentrics and depth."""

    tri: np.ndarray  # (H, W) int32
    bary: np.ndarray  # (H, W, 3) float32, zero where empty
    depth: np.ndarray  # (H, W) float32, +inf where empty

    @property
    def mask(self) -> np.ndarray:
        return self.tri >= 0


def quads_to_triangles(faces: np.ndarray) -> np.ndarray:
    """(F, 4) quads with -1 in the last column for triangles -> (T, 3) triangles, same winding."""
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 4:
        raise RasterError(f"faces must be (F, 4) quads, got shape {f.shape}")
    first = f[:, [0, 1, 2]]
    quad = f[:, 3] >= 0
    second = f[quad][:, [0, 2, 3]]
    return np.concatenate([first, second]).astype(np.int32)


def rasterize(xy: np.ndarray, depth: np.ndarray, tris: np.ndarray, height: int, width: int,
              cull: str = "back") -> Raster:
    """Z-buffer ``tris`` (indices into the (N, 2) screen points ``xy``, y down) at ``height`` x
    ``width``. ``depth``: (N,) distance from the camera, smaller is nearer. ``cull``: "back"
    drops triangles whose screen winding is clockwise-on-screen for a counter-clockwise mesh
    (i.e. facing away), "none" keeps both sides."""
    if cull not in ("back", "none"):
        raise RasterError(f"cull must be 'back' or 'none', got {cull!r}")
    if height < 1 or width < 1:
        raise RasterError(f"image size must be positive, got {width}x{height}")
    # float32 is plenty: every product below is of pixel-local differences.
    xy = np.asarray(xy, dtype=np.float32)
    depth = np.asarray(depth, dtype=np.float32)
    tris = np.asarray(tris, dtype=np.int64)
    orig = np.arange(len(tris))
    # Cull first (cheap, on all triangles), then do the rest on the survivors only.
    front = (depth[tris] > 1e-6).all(axis=1)
    tris, orig = tris[front], orig[front]
    p0, p1, p2 = xy[tris[:, 0]], xy[tris[:, 1]], xy[tris[:, 2]]
    # Signed area with y pointing down: a counter-clockwise (seen from the camera, y up) mesh
    # triangle has negative area on screen.
    area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    keep = area < -1e-12 if cull == "back" else np.abs(area) > 1e-12
    tris, orig, p0, p1, p2, area = tris[keep], orig[keep], p0[keep], p1[keep], p2[keep], area[keep]
    lo = np.minimum(np.minimum(p0, p1), p2)
    hi = np.maximum(np.maximum(p0, p1), p2)
    x0 = np.maximum(np.ceil(lo[:, 0]), 0).astype(np.int64)
    y0 = np.maximum(np.ceil(lo[:, 1]), 0).astype(np.int64)
    x1 = np.minimum(np.floor(hi[:, 0]), width - 1).astype(np.int64)
    y1 = np.minimum(np.floor(hi[:, 1]), height - 1).astype(np.int64)
    keep = (x1 >= x0) & (y1 >= y0)
    tris, orig, p0, p1, p2, area = tris[keep], orig[keep], p0[keep], p1[keep], p2[keep], area[keep]
    y0, y1 = y0[keep], y1[keep]

    # Scan-line spans, vectorised: one entry per (triangle, pixel row) ...
    nrows = y1 - y0 + 1
    rt = np.repeat(np.arange(len(tris)), nrows)
    ys = (y0[rt] + np.arange(rt.size) - np.repeat(np.cumsum(nrows) - nrows, nrows)).astype(np.float32)
    xl = np.full(rt.size, np.inf, np.float32)
    xr = np.full(rt.size, -np.inf, np.float32)
    for pa, pb in ((p0, p1), (p1, p2), (p2, p0)):
        ax, ay, bx, by = pa[rt, 0], pa[rt, 1], pb[rt, 0], pb[rt, 1]
        dy = by - ay
        ok = (ys >= np.minimum(ay, by)) & (ys <= np.maximum(ay, by)) & (dy != 0)
        x = ax + (ys - ay) * (bx - ax) / np.where(ok, dy, np.float32(1.0))
        xl = np.where(ok, np.minimum(xl, x), xl)
        xr = np.where(ok, np.maximum(xr, x), xr)
    # ... the row's covered pixel centres (the triangle meets the row between xl and xr) ...
    valid = np.isfinite(xl)
    xs0 = np.zeros(rt.size, np.int64)
    xs0[valid] = np.maximum(np.ceil(xl[valid] - 1e-4), 0)
    xs1 = np.full(rt.size, -1, np.int64)
    xs1[valid] = np.minimum(np.floor(xr[valid] + 1e-4), width - 1)
    cnt = np.maximum(xs1 - xs0 + 1, 0)
    # ... and one entry per covered pixel.
    pt = np.repeat(rt, cnt)
    py = np.repeat(ys, cnt)
    px = (np.repeat(xs0, cnt) + np.arange(pt.size) - np.repeat(np.cumsum(cnt) - cnt, cnt)).astype(np.float32)
    a, b, c = p0[pt], p1[pt], p2[pt]
    inv = 1.0 / area[pt]
    w0 = ((b[:, 0] - px) * (c[:, 1] - py) - (b[:, 1] - py) * (c[:, 0] - px)) * inv
    w1 = ((c[:, 0] - px) * (a[:, 1] - py) - (c[:, 1] - py) * (a[:, 0] - px)) * inv
    bw = np.clip(np.stack([w0, w1, 1 - w0 - w1], axis=1), 0, 1)
    bw /= bw.sum(axis=1, keepdims=True)
    z = (bw * depth[tris[pt]]).sum(axis=1)
    pix = py.astype(np.int64) * width + px.astype(np.int64)

    tri_img = np.full(height * width, -1, dtype=np.int32)
    bary = np.zeros((height * width, 3), dtype=np.float32)
    zimg = np.full(height * width, np.inf, dtype=np.float32)
    if pix.size:
        # One float key sorts by pixel, then by depth within a pixel (depth scaled into [0, 1)):
        # a single argsort is about twice as fast as lexsort.
        zn = z.astype(np.float64)
        zn = (zn - zn.min()) / (np.ptp(zn) * 1.001 + 1e-12)
        order = np.argsort(pix + zn)
        ps = pix[order]
        first = np.ones(ps.size, dtype=bool)
        first[1:] = ps[1:] != ps[:-1]
        win = order[first]
        tri_img[pix[win]] = orig[pt[win]]
        bary[pix[win]] = bw[win]
        zimg[pix[win]] = z[win]
    return Raster(tri_img.reshape(height, width), bary.reshape(height, width, 3),
                  zimg.reshape(height, width))


def vertex_normals(verts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (N, 3) of a counter-clockwise mesh."""
    v = np.asarray(verts, dtype=np.float64)
    fn = np.cross(v[tris[:, 1]] - v[tris[:, 0]], v[tris[:, 2]] - v[tris[:, 0]])
    n = np.zeros_like(v)
    flat = tris.reshape(-1)
    for c in range(3):  # bincount is much faster than np.add.at
        n[:, c] = np.bincount(flat, weights=np.repeat(fn[:, c], 3), minlength=len(v))
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return n / np.maximum(norm, 1e-12)


def interpolate(raster: Raster, tris: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-pixel barycentric interpolation of per-vertex ``values`` (N, C) -> (H, W, C), zero
    where empty."""
    h, w = raster.tri.shape
    out = np.zeros((h, w, values.shape[1]), dtype=np.float32)
    m = raster.mask
    t = tris[raster.tri[m]]
    b = raster.bary[m]
    out[m] = (values[t[:, 0]] * b[:, 0:1] + values[t[:, 1]] * b[:, 1:2] + values[t[:, 2]] * b[:, 2:3])
    return out
