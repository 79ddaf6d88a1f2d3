"""Hidden test cases (grader copy only: the student package leaves this folder out).

Each topic module holds ``SPECS = {exercise name: [spec, ...]}``, plain data that the exercise's
case builder in ``lecturelib.checks.<topic>`` turns into cases. Cases differ from the visible ones
(other shapes, strides, paddings, seeds), so passing the visible suite by special-casing is not enough.
"""
