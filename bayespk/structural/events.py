"""Codes of the nodes of an ODE event schedule, the input format of the solver (:mod:`bayespk.structural.diffeq`).

:class:`bayespk.data.schedule.Schedule` builds the nodes from a dataset's records; the solver reads them.
"""

# node kinds
RECORD, BOLUS, INFUSION_START, INFUSION_END, POINT = 0, 1, 2, 3, 4
# rate codes of an infusion start
FIXED_RATE, MODELED_RATE, MODELED_DURATION = 0, -1, -2
