"""The orders' names, in their natural sequence: the one list of orders.

Tables, legends and sorting list the orders this way, and each order class of
`kdprune.schedules.orders` takes its `name` from here. A leaf module, so the report and the
command line's checks read it without loading the stages (or torch).
"""

PRUNE_THEN_DISTILL = "prune_then_distill"
DISTILL_THEN_PRUNE = "distill_then_prune"
JOINT = "joint"
ORDER_NAMES = (PRUNE_THEN_DISTILL, DISTILL_THEN_PRUNE, JOINT)
