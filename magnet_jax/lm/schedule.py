"""MAGNeT's decoding schedule: how many spans to re-mask, the CFG scale and the temperature at
every step of every stage, computed once on the host.

These are plain numbers fixed by (decoding_steps, sequence length, prompt length), so they are
worked out in numpy with the reference's float32 arithmetic and handed to the compiled sampler
as constant arrays. Inside the loop a step only indexes them.

Per stage with n steps, at step i (``steps_left = n - 1 - i``):

    timestep  = linspace(0, 1, n)[i]                  (torch's float32 linspace)
    mask_p    = cos(pi/2 * timestep)                   (float32)
    n_masked  = max(int(mask_p * n_units), 1)          n_units: spans (nonoverlap) or tokens to generate
    cfg_coef  = mask_p * max_cfg + (1 - mask_p) * min_cfg
    temp      = temperature * steps_left / n           (or temperature, without annealing)
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class StageSchedule:
    num_masked: np.ndarray    # int32 [n]: spans/tokens re-masked at each step
    cfg_coef: np.ndarray      # float32 [n]
    temperature: np.ndarray   # float32 [n]: already clamped to >= 0.01 as the reference does


def torch_linspace_f32(n: int) -> np.ndarray:
    """torch.linspace(0, 1, n) in float32, bit for bit: the first half counts up from 0, the
    second half counts down from 1, with the float32 step 1 / (n - 1) and a fused multiply-add
    (one rounding), as torch's CPU kernel computes it. The step counts depend on this: with
    cos(pi/3) = 0.5, one ulp decides between 79 and 80 spans out of 160."""
    if n == 1:
        return np.zeros(1, np.float32)
    step = np.float64(np.float32(1.0) / np.float32(n - 1))
    half = n // 2
    return np.asarray([np.float32(step * i) if i < half else np.float32(1.0 - step * (n - 1 - i))
                       for i in range(n)], np.float32)


def mask_probabilities(n: int) -> np.ndarray:
    """cos(pi/2 * t) on the timestep grid, in float32 arithmetic as the reference does."""
    half_pi_t = [np.float32(np.float32(t) * np.float32(math.pi)) * np.float32(0.5) for t in torch_linspace_f32(n)]
    return np.asarray([np.float32(math.cos(np.float64(x))) for x in half_pi_t], np.float32)


def stage_schedule(n_steps: int, n_units: int, *, temperature: float, anneal_temp: bool,
                   max_cfg_coef: float, min_cfg_coef: float) -> StageSchedule:
    mask_p = mask_probabilities(n_steps)
    num_masked = np.array([max(int(np.float32(p) * np.float32(n_units)), 1) for p in mask_p], np.int32)
    cfg = np.array([float(p) * max_cfg_coef + (1 - float(p)) * min_cfg_coef for p in mask_p], np.float32)
    steps_left = np.arange(n_steps - 1, -1, -1)
    temps = [temperature * (left / n_steps) if anneal_temp else temperature for left in steps_left]
    return StageSchedule(num_masked, cfg, np.array([max(t, 1e-2) for t in temps], np.float32))
