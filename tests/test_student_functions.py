"""lecturelib._student: how topic modules take the student's functions (one behaviour for every topic)."""
import pytest

from lecturelib import _student, reference
from lecturelib._student import call_student, function_or_reference, reference_functions
from lecturelib._validate import require_callable


def test_reference_functions_are_the_topics_graded_names():
    functions = reference_functions("detr")
    assert list(functions) == reference.detr.__all__
    assert functions["hungarian_match"] is reference.hungarian_match


def test_the_student_copy_has_no_reference_and_asks_for_the_students_function(monkeypatch):
    monkeypatch.setattr(_student, "has_reference", lambda: False)
    assert reference_functions("detection") == {}
    with pytest.raises(TypeError, match="pass your nms"):
        function_or_reference(None, "nms", "detection")
    mine = lambda *args: None  # noqa: E731
    assert function_or_reference(mine, "nms", "detection") is mine


def test_function_or_reference_falls_back_to_the_reference_and_checks_what_it_is_given():
    assert function_or_reference(None, "nms", "detection") is reference.nms
    with pytest.raises(TypeError, match="nms must be a function, got int 3"):
        function_or_reference(3, "nms", "detection")
    with pytest.raises(TypeError, match="loss_fn must be a function"):
        require_callable("loss_fn", "cross_entropy")


def test_call_student_returns_a_message_instead_of_raising():
    def stub(x):
        raise NotImplementedError()

    def broken(x):
        raise IndexError("index 3 is out of bounds " + "x" * 400)

    assert call_student(lambda x, *, y: x + y, 1, y=2, what="add") == (3, None)
    assert call_student(stub, 1, what="nms") == (None, "implement nms above")
    result, message = call_student(broken, 1, what="nms")
    assert result is None and message.startswith("your nms raised IndexError: index 3") and len(message) == 300
