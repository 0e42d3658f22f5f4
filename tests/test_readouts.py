"""The survival read-out (``agents.readouts.survival_features``): the expert's reflex triggers, the
water and cow entries and its pocket-site test on hand-built map windows, agreement with the
scripted controller's own site choice in a Crafter episode, and the GOAP policy reading it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.encoding import COMPASS_TARGETS, COMPASS_UNKNOWN, INVENTORY_KEYS, STATUS_DIM, VIEW_NAMES
from agents.goap import GOAPConfig, GOAPPolicy
from agents.readouts import SURVIVAL_DIM, compass_vector, site_directions, survival_features, walking_distance

ID = {n: i for i, n in enumerate(VIEW_NAMES)}
KEY = {k: i for i, k in enumerate(INVENTORY_KEYS)}


def window(rows: list[str]) -> torch.Tensor:
    """A map window from characters: . grass, S stone, W water, P path."""
    code = {".": "grass", "S": "stone", "W": "water", "P": "path"}
    return torch.tensor([[ID[code[c]] for c in row] for row in rows])[None]


def compass(**offsets: tuple[int, int]) -> torch.Tensor:
    c = np.full((1, len(COMPASS_TARGETS), 2), COMPASS_UNKNOWN, dtype=np.int8)
    for name, xy in offsets.items():
        c[0, COMPASS_TARGETS.index(name)] = xy
    return torch.from_numpy(compass_vector(c))


def features(cells: torch.Tensor, s: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    return survival_features(cells, s, compass() if c is None else c)[0]


def status(daylight: float = 1.0, **counts: int) -> torch.Tensor:
    held = {"health": 9, "food": 9, "drink": 9, "energy": 9, **counts}
    s = torch.zeros(1, STATUS_DIM)
    for k, v in held.items():
        s[0, KEY[k]] = v / 9.0
    s[0, len(INVENTORY_KEYS)] = round(daylight * 255) / 255.0  # as status_vector encodes it
    return s


# the agent at the centre (4, 4); a 3×3 stone block east of it: the mouth is the cell to the east,
# digging east (the two cells north and south of the block's middle column are mouths too, 5 away)
BLOCK = [
    ".........",
    ".........",
    ".........",
    "......SSS",
    "......SSS",
    "......SSS",
    ".........",
    ".........",
    ".........",
]


def test_nearest_site_by_hand():
    f = features(window(BLOCK), status(daylight=0.2, wood_pickaxe=1), compass(water=(2, -1)))
    assert f.shape == (SURVIVAL_DIM,)
    expected = (
        [1, 1, 0, 0, 0, 0]  # night, dark, tired, hurt, thirsty, hungry
        + [2 / 16, -1 / 16, 1, -1, 1, 0]  # water: offset, signs, known, within a cell
        + [0] * 6  # no cow remembered
        + [1, 1 / 16, 0, 1 / 16, 0]  # site known, dx, dy, steps, at the site
        + [0, 1, 0, 0]  # dig east
        + [0]  # no walls around the agent
    )
    torch.testing.assert_close(f, torch.tensor(expected, dtype=torch.float32))
    sites = site_directions(window(BLOCK))[0]  # [4 directions, y, x]
    found = {(int(d), int(y), int(x)) for d, y, x in sites.nonzero()}
    assert found == {(1, 4, 5), (3, 2, 7), (2, 6, 7)}  # east from (5,4); down from (7,2); up from (7,6)


def test_triggers_follow_the_experts_thresholds():
    block = window(BLOCK)

    def flags(**kw):
        return features(block, status(**kw))[:6].tolist()

    assert flags(daylight=0.2) == [0, 1, 0, 0, 0, 0]  # dark but no pickaxe to dig with
    assert flags(daylight=0.5, wood_pickaxe=1) == [0, 0, 0, 0, 0, 0]
    assert flags(energy=2) == [0, 0, 1, 0, 0, 0]
    assert flags(health=5, food=3, drink=3, wood_pickaxe=1) == [0, 0, 0, 1, 1, 1]
    assert flags(health=5, food=2, drink=9, wood_pickaxe=1) == [0, 0, 0, 0, 0, 1]  # hungry: eat first
    assert flags(health=6, wood_pickaxe=1) == [0, 0, 0, 0, 0, 0]
    assert flags(drink=5, food=6) == [0, 0, 0, 0, 0, 0]


def test_unreachable_site_is_unknown_and_walls_count_the_neighbours():
    moat = [row[:5] + "W" + row[6:] for row in BLOCK]  # water between the agent and the block
    f = features(window(moat), status())
    assert f[18:27].tolist() == [0.0] * 9
    assert torch.isinf(walking_distance(window(moat))[0, 4, 7])
    sealed = [".........", ".........", ".........", "....S....", "...SPS...", "....S....",
              ".........", ".........", "........."]  # fmt: skip
    f = features(window(sealed), status(), compass(cow=(0, 1)))
    assert f[27] == 1.0 and f[18] == 0.0
    assert f[12:18].tolist() == [0.0, 1 / 16, 0.0, 1.0, 1.0, 1.0]  # the cow, a cell south


def test_at_the_mouth_the_site_is_here():
    shifted = ["." + row[:-1] for row in BLOCK]  # the block one cell closer: the agent is at the mouth
    shifted = [row[:5] + "S" * 4 if 3 <= i <= 5 else row for i, row in enumerate(shifted)]
    f = features(window(shifted), status())
    assert f[18:23].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_sites_agree_with_the_scripted_controllers_choice():
    """In a real episode, every site the scripted expert picks inside the window passes the
    read-out's test, and the read-out knows a site whenever the expert found one there."""
    pytest.importorskip("crafter")
    from agents.encoding import encode_map, encode_status
    from agents.goap import status_vector
    from agents.navigation import MOVES
    from eval.minecraft import Job, RunSpec, _setup, run_job

    st = _setup(
        RunSpec("benchmarks/suites/crafter-long.yaml", "oracle", "scripted", "crafter", None, 0, {}, {})
    )
    expert = st["controller"]
    find, checked = expert._find_shelter, []

    def spy(view):
        s = find(view)
        m = expert.map
        if s is not None and max(abs(s["a"][0] - m.pos[0]), abs(s["a"][1] - m.pos[1])) <= 10:
            cells = torch.from_numpy(encode_map(m, 10).astype(np.int64))[None]
            inv, day, sleeping = encode_status(view)
            s_ = torch.from_numpy(status_vector(inv, np.array(day), np.array(sleeping)))[None]
            f = features(cells, s_)[None]
            dx, dy = s["a"][0] - m.pos[0], s["a"][1] - m.pos[1]
            checked.append((bool(site_directions(cells)[0, list(MOVES.values()).index(s["d"]), dy + 10, dx + 10]),
                            bool(f[0, 18])))  # fmt: skip
        return s

    expert._find_shelter = spy
    for i, seed in enumerate((100002, 100003)):
        run_job(Job(1, i, seed, 260, False), st)  # past the first dusk
    assert checked and all(site and known for site, known in checked)


def test_policy_reads_the_survival_features():
    torch.manual_seed(0)
    config = GOAPConfig(map_radius=4, history=5, d_model=32, heads=2, survival=True)
    policy = GOAPPolicy(config).eval()
    plain = GOAPPolicy(GOAPConfig(map_radius=4, history=5, d_model=32, heads=2)).eval()
    g = torch.Generator().manual_seed(0)
    batch = {
        "view": torch.randint(0, len(VIEW_NAMES), (1, 7, 9), generator=g),
        "facing": torch.tensor([ID["grass"]]),
        "map": window(BLOCK),
        "goal": torch.tensor([0]),
        "hist_view": torch.zeros(1, 5, 7, 9, dtype=torch.long),
        "hist_status": torch.zeros(1, 5, STATUS_DIM),
        "hist_action": torch.zeros(1, 5, dtype=torch.long),
        "hist_valid": torch.zeros(1, 5, dtype=torch.bool),
        "compass": compass(),
    }
    day, night = status(daylight=0.5, wood_pickaxe=1), status(daylight=0.3, wood_pickaxe=1)
    plain.load_state_dict(policy.state_dict(), strict=False)
    plain.status.weight.data[:, len(INVENTORY_KEYS)] = 0  # blind to the daylight number itself
    policy.status.weight.data[:, len(INVENTORY_KEYS)] = 0
    # the threshold shows only through the read-out
    assert not torch.allclose(policy({**batch, "status": day}), policy({**batch, "status": night}))
    torch.testing.assert_close(plain({**batch, "status": day}), plain({**batch, "status": night}))


def test_survival_needs_the_compass():
    from telos.errors import UserError

    with pytest.raises(UserError, match="compass"):
        GOAPPolicy(GOAPConfig(map_radius=4, compass=False, survival=True))
