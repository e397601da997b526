"""Name → objective: every LM preference objective, validated against its signature.

``resolve("rainbowpo", {"beta": 10, "length_normalization": True})`` returns a :class:`Objective`
whose ``__call__`` maps :class:`~scorealign.preference.losses.PairLogps` to a ``PrefLoss``. Names
are the ``OBJECTIVES`` entries (simpo, orpo, rainbowpo, mallows_theta, mallows_phi) plus every
``PAIRWISE`` link used as a DPO-family objective (sigmoid, ipo, hinge, cdpo, robust), plus ``kto``
for unpaired data. Parameters are the objective's keyword-only arguments; a typo is an error
listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

# Importing the modules registers their entries.
from scorealign.preference import components as _components  # noqa: F401
from scorealign.preference import mallows as _mallows  # noqa: F401
from scorealign.preference.losses import (OBJECTIVES, PAIRWISE, PairLogps, ParamError, PrefLoss,
                                          kto, register_links_as_objectives)
from scorealign.preference.mallows import AUTO, check_dispersion_scale

register_links_as_objectives()

UNPAIRED = {"kto": kto}


@dataclass(frozen=True)
class Objective:
    """A resolved objective: the function, its bound parameters and what it needs computed."""

    name: str
    fn: Callable[..., Any]
    params: dict[str, Any] = field(default_factory=dict)
    needs_reference: bool = True
    needs_entropy: bool = False
    unpaired: bool = False

    def __call__(self, lp: PairLogps) -> PrefLoss:
        """Evaluate on a batch of pair log-probs."""
        return self.fn(lp, **self.params)

    @property
    def auto_dispersion(self) -> bool:
        """Whether λ is ``"auto"`` (to be set from the reference cache with :meth:`bind`)."""
        return self.needs_entropy and self.params.get("dispersion_scale",
                                                      allowed_params(self.name).get(
                                                          "dispersion_scale")) == AUTO

    def bind(self, **params: Any) -> "Objective":
        """The same objective with some parameters replaced (e.g. the resolved λ)."""
        return dataclasses.replace(self, params={**self.params, **params})


def names() -> list[str]:
    """All valid objective names."""
    return sorted(set(OBJECTIVES) | set(UNPAIRED))


def allowed_params(name: str) -> dict[str, Any]:
    """Keyword parameters of objective ``name`` with their defaults."""
    fn = UNPAIRED.get(name) or OBJECTIVES.get(name).fn
    target = PAIRWISE.get(fn.link).fn if hasattr(fn, "link") else fn
    out = {p.name: p.default for p in inspect.signature(target).parameters.values()
           if p.kind is inspect.Parameter.KEYWORD_ONLY}
    if name in UNPAIRED:
        out.pop("z0", None)
    return out


def resolve(name: str, params: dict[str, Any] | None = None) -> Objective:
    """Look up ``name`` and bind ``params``; ValueError on an unknown name or parameter."""
    if name not in OBJECTIVES and name not in UNPAIRED:
        raise ValueError(f"unknown loss {name!r}; choose one of {names()}")
    params = dict(params or {})
    allowed = allowed_params(name)
    bad = sorted(set(params) - set(allowed))
    if bad:
        raise ParamError(bad[0], f"loss {name!r} has no parameter(s) {bad}; "
                         f"valid: {sorted(allowed)}")
    from scorealign.config import check_param_types  # a wrong type: exit 2 naming it
    # dispersion_scale takes a number or "auto": validated with the Mallows objectives below
    check_param_types({k: v for k, v in params.items() if k != "dispersion_scale"}, allowed)
    if name in UNPAIRED:
        return Objective(name, functools.partial(UNPAIRED[name]), params, True, False, True)
    full = {**allowed, **params}
    if name == "rainbowpo":
        from scorealign.preference.components import check_rainbowpo

        check_rainbowpo(**full)
    if "dispersion_scale" in full:
        check_dispersion_scale(full["dispersion_scale"])
    if "eps" in full and full["eps"] is not None and not 0.0 <= full["eps"] < 0.5:
        raise ParamError("eps", f"must be in [0, 0.5), got {full['eps']}")
    needs_entropy = name.startswith("mallows") or bool(full.get("contextual_scaling"))
    needs_ref = _needs_reference(name, full) or needs_entropy
    return Objective(name, OBJECTIVES.get(name).fn, params, needs_ref, needs_entropy, False)


def _needs_reference(name: str, p: dict[str, Any]) -> bool:
    if name in ("simpo", "orpo"):
        return False
    if name == "rainbowpo":
        return not (p.get("mixing") and p.get("mixing_alpha") == 0.0)
    return True
