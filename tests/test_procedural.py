from envs.math.procedural import generate
from envs.math.sources import load_rows
from rewards.verifiers import verify_gsm8k


def test_splits_never_overlap_and_are_seeded():
    train = generate("arith", "train", 2000, max_value=30)
    test = generate("arith", "test", 500, max_value=30)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    assert generate("arith", "test", 50, max_value=30) == test[:50]
    assert len({r["prompt"] for r in train}) == 2000


def test_solutions_are_correct_and_verifiable():
    for r in generate("arith", "train", 300, max_value=50, max_operand=9):
        lines = r["solution"].splitlines()
        for line in lines[:-1]:
            lhs, rhs = line.split("=")
            assert eval(lhs) == int(rhs) >= 0  # noqa: S307 - our own arithmetic strings
        assert verify_gsm8k(r["solution"], r["answer"]) is True


def test_direct_fraction_and_spec_options():
    rows = generate("arith", "train", 400, max_value=30, direct_frac=0.5)
    direct = sum(r["solution"].startswith("####") for r in rows)
    assert 120 < direct < 280
    via_spec = load_rows("procedural:arith:test?n=5&max_value=30")
    assert via_spec == generate("arith", "test", 5, max_value=30)
