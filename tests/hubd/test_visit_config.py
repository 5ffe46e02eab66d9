"""hubd.toml's [visit] (hubd/config.py): no route by default (nothing held), and a route that
names a lock [locks] does not is refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubd.config import ConfigError, load_config


def test_the_route_must_name_locks_of_locks(tmp_path: Path) -> None:
    config = tmp_path / "hubd.toml"
    base = ('hub_id = "hub-1"\nstate_dir = "/tmp/none"\n[serial]\nlink_key = "' + "ab" * 32
            + '"\n[keys]\n"k" = "uJX0yJ2Z3X1v9b1ZC0kQZ8b0h1s1mLZ2Jw2u7ZqkY3o"\n'
            '[locks]\nentrance = "entrance_door"\nfront-door = "inside_turner"\n')
    config.write_text(base)
    assert load_config(config).visit.route == [], "no route: nothing is held"
    config.write_text(base + '[visit]\nroute = ["entrance", "front-door"]\nhold_s = 90\n')
    assert load_config(config).visit.route == ["entrance", "front-door"]
    # Times left out keep the hold's own defaults (hubd.locks.visit.VisitRoute), set ones win.
    from hubd.locks.visit import VisitRoute

    assert VisitRoute((), **load_config(config).visit.given()) == VisitRoute((), hold_s=90)
    config.write_text(base + '[visit]\nroute = ["entrance", "back-door"]\n')
    with pytest.raises(ConfigError) as refused:
        load_config(config)
    assert "visit.route names 'back-door', which [locks] does not" in str(refused.value)
    assert "\n" not in str(refused.value)
