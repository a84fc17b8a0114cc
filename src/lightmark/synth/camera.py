"""Head pose and the pinhole camera shared by the renderer and the 3D fitter.

Model space: x to the subject's left, y up, z out of the face (ICT). Camera space is OpenCV's:
x right, y down, z forward, camera at the origin. Pose angles in degrees:
positive yaw turns the face towards image right, positive pitch tilts it down (looking down),
positive roll turns it counter-clockwise on screen.
"""
from __future__ import annotations

import numpy as np

# Model -> camera axes flip (a 180 degree turn about x, so it keeps mesh winding).
FLIP = np.array([1.0, -1.0, -1.0])


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """3x3 rotation in model space for the pose (degrees): roll after pitch after yaw."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def angles(r: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a rotation made by :func:`rotation` (inverse of it)."""
    r = np.asarray(r, dtype=np.float64)
    # r = Rz Rx Ry: r[2,1] = sin(p); r[2,0] = -cos(p) sin(y); r[2,2] = cos(p) cos(y);
    # r[0,1] = -sin(r) cos(p); r[1,1] = cos(r) cos(p).
    p = np.arcsin(np.clip(r[2, 1], -1, 1))
    y = np.arctan2(-r[2, 0], r[2, 2])
    rr = np.arctan2(-r[0, 1], r[1, 1])
    return float(np.rad2deg(y)), float(np.rad2deg(p)), float(np.rad2deg(rr))


def to_camera(verts: np.ndarray, rot: np.ndarray, trans: np.ndarray) -> np.ndarray:
    """Model-space points (N, 3) -> camera space: rotate, flip to camera axes, translate."""
    return (np.asarray(verts) @ rot.T) * FLIP + np.asarray(trans)


def project(cam: np.ndarray, focal: float, centre: tuple[float, float]) -> np.ndarray:
    """Perspective projection of camera-space points to 0-based pixel-centre coordinates."""
    z = cam[:, 2:3]
    return cam[:, :2] / z * focal + np.asarray(centre)
