"""The recipes musered can run, by DRS name.

Each recipe module is imported explicitly here once it is complete and tested; nothing
half-written is registered.
"""

from __future__ import annotations

from .base import Recipe

RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    """The recipe named ``name`` (DRS spelling); KeyError with the known names otherwise."""
    _load_all()
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(RECIPES)) or "none"
        raise KeyError(f"unknown recipe {name!r}; known recipes: {known}") from None


def all_recipes() -> dict[str, Recipe]:
    _load_all()
    return dict(RECIPES)


def _load_all() -> None:
    # Recipe modules register themselves on import; list them here as they land.
    from . import bias  # noqa: F401
    from . import dark  # noqa: F401
    from . import flat  # noqa: F401
    from . import wavecal  # noqa: F401
    from . import lsf  # noqa: F401
    from . import scibasic  # noqa: F401
    from . import twilight  # noqa: F401
    from . import make_cube  # noqa: F401
    from . import scipost  # noqa: F401
    from . import standard  # noqa: F401
    from . import exp_align  # noqa: F401
    from . import imagealign  # noqa: F401
    from . import exp_combine  # noqa: F401
    from . import cubecombine  # noqa: F401
    pass
