"""`make audit`: every exercise's mutant library against its checks (issue 12's targets), and the audit
tool itself on a planted weak exercise."""
import pytest

from lecturelib.checks import EXERCISES
from lecturelib.hidden import audit
from lecturelib.hidden.mutants import CORE, MIN_MUTANTS, Mutant, alternatives, mutants


@pytest.fixture(scope="module")
def audits():
    return {name: audit.audit_exercise(name) for name in EXERCISES}


@pytest.mark.parametrize("name", list(EXERCISES))
def test_exercise_meets_the_audit_targets(audits, name):
    assert not audits[name].problems(timing=False), "\n".join(audits[name].problems(timing=False))


def test_all_reports_together_name_the_cause(audits):
    assert not audit.problems(list(audits.values()), timing=False), audit.table(list(audits.values()))


@pytest.mark.parametrize("name", list(EXERCISES))
def test_every_exercise_has_a_library_with_stated_rules(name):
    library = mutants(name)
    assert len(library) >= MIN_MUTANTS["core" if name in CORE else "other"]
    assert alternatives(name), f"{name}: no alternative correct implementation"
    assert all(m.cause.strip() for m in library), "every mutant names the cause it must be told"
    # Every rule the specification states is broken by at least one mutant the hidden suite rejects
    # (test_exercise_meets_the_audit_targets): the list below is each exercise's stated rules.
    assert any(m.rule for m in library), f"{name}: no mutant covers a rule of the specification"
    assert len({m.label for m in library}) == len(library), "mutant labels are unique"


def test_audit_reports_a_weak_exercise(monkeypatch, capsys):
    """A 'mutant' that is correct passes the hidden suite, and one given the wrong expected cause is unnamed:
    the audit says both and exits non-zero."""
    from lecturelib import reference
    from lecturelib.hidden import mutants as library
    from lecturelib.hidden.mutants import segmentation
    planted = {"nearest_unpool": [
        Mutant("not a bug at all", reference.nearest_unpool, "anything"),
        Mutant("wrong expected cause", lambda x, scale: x, "a cause no report says"),
    ]}
    monkeypatch.setattr(segmentation, "MUTANTS", {**segmentation.MUTANTS, **planted})
    assert library.mutants("nearest_unpool")[0].label == "not a bug at all"
    assert audit.main(["nearest_unpool"]) == 1
    out = capsys.readouterr().out
    assert "hidden suite passes mutant 'not a bug at all'" in out
    assert "'wrong expected cause' should say 'a cause no report says'" in out


def test_audit_selects_topics_and_names():
    assert audit.select(["detr"]) == [n for n, e in EXERCISES.items() if e.topic == "detr"]
    assert audit.select(["grad_cam", "detr"])[0] == "grad_cam"
    with pytest.raises(SystemExit):
        audit.select(["no_such_exercise"])
