"""The shape every middle operator of the case stream shares: receive the ``cases`` list, act
on the cases it is for, pass the whole list on (a case is never dropped, see
``pipelines.cases``)."""

from __future__ import annotations

from monai.deploy.core import OperatorSpec

from pipelines.cases import Case

__all__ = ["CaseStage"]


class CaseStage:
    """Mixin, named before the SDK operator class: ``class X(CaseStage, Operator)``.

    Subclasses say which cases they take (``wants``) and what they do to one (``handle``,
    in place); ``setup`` and ``compute`` are the same for all of them."""

    def wants(self, case: Case) -> bool:
        raise NotImplementedError

    def handle(self, case: Case) -> None:
        raise NotImplementedError

    def setup(self, spec: OperatorSpec):
        spec.input("cases")
        spec.output("cases")

    def compute(self, op_input, op_output, context):
        cases = op_input.receive("cases") or []
        for case in cases:
            if self.wants(case):
                self.handle(case)
        op_output.emit(cases, "cases")
