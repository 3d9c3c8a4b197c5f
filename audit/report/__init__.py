"""The auditor's report.

:mod:`audit.report.build` gathers it (data use, privacy spent, denials, verification, data
circulation; CSV), :mod:`audit.report.html` renders one self-contained page and
:mod:`audit.report.svg` draws its inline charts.
"""
