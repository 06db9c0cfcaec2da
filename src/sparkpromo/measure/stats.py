"""Statistics as column expressions: the t quantile, and the two-proportion and Welch intervals."""

from __future__ import annotations

from functools import reduce

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile
# Cornish-Fisher terms of Student's t 97.5% quantile in powers of 1/df (Abramowitz & Stegun 26.7.5) at z = Z95.
_T_TERMS = tuple(g(Z95) for g in (
    lambda z: (z ** 3 + z) / 4,
    lambda z: (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
    lambda z: (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
    lambda z: (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160))


def _div(num: Column, den: Column) -> Column:
    """``num / den`` as a double; null when ``den`` is 0 or null (never an error under ANSI mode)."""
    return F.try_divide(num.cast(DoubleType()), den.cast(DoubleType()))


def t_quantile_975(df: Column) -> Column:
    """Student's t 97.5% quantile for ``df`` degrees of freedom (Cornish-Fisher; Z95 for infinite/null df)."""
    d = df.cast(DoubleType())
    series = reduce(lambda acc, k: acc + F.lit(_T_TERMS[k]) / F.pow(d, F.lit(float(k + 1))),
                    range(len(_T_TERMS)), F.lit(Z95))
    return F.when(d.isNull() | F.isnan(d), F.lit(Z95)).otherwise(series)


def two_proportion_ci(p_t: Column, n_t: Column, p_c: Column, n_c: Column) -> tuple[Column, Column, Column]:
    """``(difference, low, high)`` of two proportions: the 95% Wald interval with unpooled variances."""
    diff = p_t - p_c
    se = F.sqrt(_div(p_t * (F.lit(1.0) - p_t), n_t) + _div(p_c * (F.lit(1.0) - p_c), n_c))
    return diff, diff - F.lit(Z95) * se, diff + F.lit(Z95) * se


def welch_ci(mean_t: Column, var_t: Column, n_t: Column, mean_c: Column, var_c: Column, n_c: Column
             ) -> tuple[Column, Column, Column]:
    """``(difference, low, high)`` of two means: the 95% Welch interval (sample variances, Welch-Satterthwaite
    degrees of freedom). Zero variance in both arms gives an interval of width 0."""
    a, b = _div(var_t, n_t), _div(var_c, n_c)
    se2 = a + b
    df = _div(se2 * se2, _div(a * a, n_t - F.lit(1)) + _div(b * b, n_c - F.lit(1)))
    half = F.when(se2 == 0, F.lit(0.0)).otherwise(t_quantile_975(df) * F.sqrt(se2))
    diff = mean_t - mean_c
    return diff, diff - half, diff + half


__all__ = [
    "Z95", "t_quantile_975", "two_proportion_ci", "welch_ci",
]
